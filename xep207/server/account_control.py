"""Account operations on the *running* server: one code path for XEP-0077
self-service, the local admin socket (``xep207ctl``) and XEP-0133 ad-hoc
commands.

``xep207.server.accounts`` only changes stored data; what a live server must
do besides — end sessions, tell contacts and rooms the account is gone — is
here, so whichever door asked, the same things happen in the same order:

deletion
    1. the account's stanzas are no longer routed (a client cannot race the
       deletion by publishing again);
    2. every session is unbound: its presence is retracted (contacts see
       ``unavailable``) and it leaves its rooms;
    3. every presence subscription ends both ways as a roster removal would
       (RFC 6121 §2.5.2): subscribers get ``unsubscribed``, contacts it
       subscribed to get ``unsubscribe`` (what Prosody and ejabberd send);
    4. the engine deletes the account's nodes, subscriptions and affiliations;
    5. the requester (XEP-0077 ``<remove/>``) gets its ``result``, then every
       session ends with the ``<not-authorized/>`` stream error (XEP-0077 §3.2).

password change
    New SCRAM keys are stored; every *other* session of the account ends with
    ``<reset/>`` (RFC 6120 §4.9.3.16: its credentials were revoked), as Prosody
    does. The session that changed its own password (XEP-0077 §3.3) stays;
    an administrator's change (socket, XEP-0133) ends them all.

Both revoke the account's credentials in the router: a stream that began
authenticating before may not bind afterwards (``reset``, ``not-authorized``);
it would outlive the change, or bind as a new account that took the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib

from xep207.hooks import STANZA
from xep207.pubsub.kinds import PRESENCE_NODE
from xep207.server import accounts
from xep207.storage.records import bare as bare_of


@dataclass(frozen=True)
class SessionInfo:
    """One connected resource, as an administrator sees it."""

    jid: str
    address: str
    available: bool


def _address(session) -> str:
    transport = getattr(session.stream, "transport", None)
    if transport is None:
        return ""
    peer = transport.getPeer()
    return str(getattr(peer, "host", peer))


class AccountControl:
    """What may be done to accounts of a running server, by whoever asked."""

    def __init__(self, server):
        self.server = server
        self.router = server.router
        self.engine = server.engine
        self.domain = server.domain
        self._leaving: set[str] = set()
        # Names only the operator may create (the --admin accounts): whoever
        # registered one in-band would hold its rights.
        self.reserved: set[str] = set()
        # Before everything (the pubsub-usage observer is at 100): a leaving
        # account's stanzas are dropped, not routed.
        server.hooks.add(STANZA, self._drop_if_leaving, priority=1000)

    def _drop_if_leaving(self, stanza) -> bool:
        session = stanza.__dict__.get("session")
        return session is not None and session.bare in self._leaving

    def jid(self, jid: str) -> str:
        """A bare account JID of this server (a bare localpart takes its domain)."""
        parsed = accounts.normalize(jid, self.domain)
        if parsed.host != self.domain:
            raise accounts.AccountError(f"{parsed.userhost()} is not an account of {self.domain}")
        return parsed.userhost()

    def is_reserved(self, jid: str) -> bool:
        try:
            return accounts.normalize(jid, self.domain).userhost() in self.reserved
        except accounts.AccountError:
            return False

    # Queries -------------------------------------------------------------------------

    async def list_users(self) -> list[str]:
        return sorted(await self.engine.storage.list_accounts(self.domain))

    def sessions(self, jid: str | None = None) -> list[SessionInfo]:
        accounts_ = [self.jid(jid)] if jid else sorted(self.router.sessions)
        return [SessionInfo(s.full, _address(s), s.available)
                for account in accounts_ for s in self.router.resources(account)]

    def online_users(self) -> list[str]:
        return sorted(account for account, resources in self.router.sessions.items() if resources)

    # Changes -------------------------------------------------------------------------

    async def add_user(self, jid: str, password: str) -> str:
        created = await accounts.create_account(self.engine, self.jid(jid), password)
        log.msg(f"created account {created}")
        return created

    async def change_password(self, jid: str, password: str, keep=None) -> None:
        """New keys; every session but ``keep`` ends with ``<reset/>``."""
        account = self.jid(jid)
        await accounts.change_password(self.engine, account, password)
        await _everywhere(self.router.revoke_credentials(account, "reset"))  # a stream mid-login may not bind now
        ended = 0
        for session in self.router.resources(account):
            if session is not keep:
                session.close("reset", "the password was changed")
                ended += 1
        log.msg(f"changed the password of {account} ({ended} other sessions ended)")

    def kick(self, jid: str) -> int:
        """End the sessions of an account, or of one full JID; how many ended."""
        bare, slash, resource = jid.partition("/")
        account = self.jid(bare)
        if slash:
            # "user@domain/" is a typo, not "every session"; "Phone" is resourceprep'd.
            try:
                resource = jidlib.JID(f"{account}/{resource}").resource or ""
            except jidlib.InvalidFormat as exc:
                raise accounts.AccountError(f"invalid JID {jid!r}: {exc}")
            if not resource:
                raise accounts.AccountError(f"invalid JID {jid!r}: an empty resource")
        ended = 0
        for session in self.router.resources(account):
            if not resource or session.jid.resource == resource:
                session.close("policy-violation", "disconnected by an administrator")
                ended += 1
        return ended

    async def delete_user(self, jid: str, farewell: Callable[[object], None] | None = None,
                          requester=None) -> None:
        """Delete an account from the running server (see the module's steps).

        ``farewell(session)`` runs for ``requester`` once the data is gone and
        before its stream ends: XEP-0077's ``result`` goes out there."""
        account = self.jid(jid)
        if await self.engine.storage.get_account(account) is None:
            raise accounts.AccountError(f"no account {account}")
        if account in self._leaving:
            raise accounts.AccountError(f"{account} is being deleted already")
        self._leaving.add(account)
        self.router.revoke_credentials(account, "not-authorized")  # a stream mid-login may not bind
        sessions = self.router.resources(account)
        try:
            for session in sessions:
                await self.router.unbind(session)
            for contact in await self._contacts(account):
                await self.server.subscriptions.remove_contact(account, contact)
            await accounts.delete_account(self.engine, account)
        except Exception:
            # Storage failed half-way: unbound sessions would linger unreachable.
            for session in sessions:
                session.close("internal-server-error", "the account could not be removed; try again")
            raise
        finally:
            self._leaving.discard(account)
        await _everywhere(self.router.revoke_credentials(account, "not-authorized"))  # logins begun meanwhile too
        await _everywhere(self.router.forget_account(account))  # and a session bound meanwhile ends too
        if requester is not None and farewell is not None:
            farewell(requester)
        for session in sessions:
            session.close("not-authorized", "account removed")
        log.msg(f"deleted account {account} ({len(sessions)} sessions ended)")

    async def _contacts(self, account: str) -> list[str]:
        """Everyone with a presence subscription to or from the account."""
        storage = self.engine.storage
        contacts = {bare_of(s.subscriber) for s in await storage.get_subscriptions(account, PRESENCE_NODE)}
        contacts |= {s.service for s in await storage.get_entity_subscriptions(account, node_id=PRESENCE_NODE)
                     if self.engine.is_pep(s.service)}
        contacts.discard(account)
        return sorted(contacts)


def install(server) -> AccountControl:
    return AccountControl(server)


async def _everywhere(done) -> None:
    """A router change a cluster also makes on its other processes
    (``xep207.cluster.invalidation``) answers a Deferred: done there too."""
    if done is not None:
        await done
