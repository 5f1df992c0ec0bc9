"""XEP-0077 in-band registration (off unless ``--registration``).

Before authentication the negotiator hands ``jabber:iq:register`` iqs here
(registration of a new account, only with ``--registration``); after it, the
same handler serves password changes and cancellation for the logged-in
account, always (through ``xep207.server.account_control``).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel.subprotocols import XMPPHandler

from xep207 import logs
from xep207.logs import peer_address
from xep207.server import accounts

NS_REGISTER = "jabber:iq:register"


def _fields(query) -> dict[str, str]:
    return {child.name: str(child) for child in query.elements() if child.uri == NS_REGISTER}


def _form(instructions: str) -> "xmlstream.domish.Element":
    from twisted.words.xish import domish

    query = domish.Element((NS_REGISTER, "query"))
    query.addElement("instructions", content=instructions)
    query.addElement("username")
    query.addElement("password")
    return query


class RegistrationHandler(XMPPHandler):
    """Account registration (when open), and for a logged-in account,
    always, its own password change and cancellation (XEP-0077 §3.2–3.3).

    Requests are accepted addressed to the server or to the account's own bare
    JID (a request without ``to`` is the latter, RFC 6120 §10.3.3); another
    account's bare JID is not a registration service.
    """

    def __init__(self, server):
        super().__init__()
        self.server = server
        server.router.handle_registration = self.register_before_login

    def connectionInitialized(self):
        self.xmlstream.addObserver("/iq/query[@xmlns='jabber:iq:register']", self._on_request)

    # Logged in: the account itself.

    def _on_request(self, iq) -> None:
        session = iq.__dict__.get("session")
        kind = iq.getAttribute("type")
        if iq.__dict__.get("handled", False) or session is None or kind not in ("get", "set"):
            return
        if iq.getAttribute("to") not in (self.server.domain, session.bare):
            return  # not ours to answer: the router says service-unavailable
        iq.handled = True
        if kind == "get":
            self._reply(iq, self._registered(session))
            return
        d = defer.ensureDeferred(self._on_set(iq, session))
        d.addErrback(self._failed, iq)

    def _registered(self, session):
        query = _form("You are registered. Send a new password, or <remove/> to delete the account.")
        query.username.addContent(session.jid.user or "")
        query.addElement("registered")
        return query

    def _reply(self, iq, child=None) -> None:
        response = xmlstream.toResponse(iq, "result")
        if child is not None:
            response.addChild(child)
        self.send(response)

    def _failed(self, failure, iq) -> None:
        if failure.check(StanzaError):
            self.send(failure.value.toResponse(iq))
            return
        logs.failure(failure, "account self-service failed")
        self.send(StanzaError("internal-server-error").toResponse(iq))

    async def _on_set(self, iq, session) -> None:
        control = self.server.accounts
        query = iq.query
        children = [child for child in query.elements()]
        if any(child.name == "remove" for child in children):
            if len(children) != 1:
                # XEP-0077 §3.2: <remove/> alone.
                raise StanzaError("bad-request", text="<remove/> must be the only child")

            def farewell(requester):
                # Sent on the stream itself: the session is unbound by now.
                requester.send(xmlstream.toResponse(iq, "result"))

            try:
                await control.delete_user(session.bare, farewell=farewell, requester=session)
            except accounts.AccountError as exc:  # another session deletes it already
                raise StanzaError("conflict", text=str(exc))
            log.msg(f"deleted account {session.bare} (in-band, from {peer_address(session)})")
            return
        fields = _fields(query)
        if "username" not in fields or "password" not in fields:
            # §3.3: both are required.
            raise StanzaError("bad-request", text="send <username/> and <password/>")
        try:
            username = accounts.normalize(fields["username"], self.server.domain).userhost()
        except accounts.AccountError:
            username = None
        if username != session.bare:
            raise StanzaError("bad-request", text="you can only change your own password")
        try:
            await control.change_password(session.bare, fields["password"], keep=session)
        except accounts.AccountError as exc:
            raise StanzaError("not-acceptable", text=str(exc))
        self._reply(iq)

    # Before login: a new account.

    def register_before_login(self, xs, iq, secure: bool) -> None:
        d = defer.ensureDeferred(self._register(xs, iq, secure))

        def reply(result):
            response = xmlstream.toResponse(iq, "result")
            if result is not None:
                response.addChild(result)
            xs.send(response)

        def failed(failure):
            if failure.check(StanzaError):
                xs.send(failure.value.toResponse(iq))
            else:
                log.err(failure, "registration failed")
                xs.send(StanzaError("internal-server-error").toResponse(iq))

        d.addCallbacks(reply, failed)

    async def _register(self, xs, iq, secure: bool):
        if iq.getAttribute("type") == "get":
            return _form("Choose a username and password.")
        if iq.getAttribute("type") != "set":
            raise StanzaError("bad-request")
        if not secure and self.server.policy.require_tls and self.server.policy.tls is not None:
            raise StanzaError("not-authorized", text="register over TLS")
        fields = _fields(iq.query)
        if not fields.get("username") or not fields.get("password"):
            raise StanzaError("not-acceptable", text="username and password are required")
        # One account per connection, a few per address per hour: attempts
        # count, not only successes, so probing names costs the same.
        if getattr(xs, "registration_attempted", False):
            raise StanzaError("resource-constraint", text="one registration per connection")
        peer = xs.transport.getPeer()
        address = getattr(peer, "host", str(peer))
        limit = self.server.registrations
        if limit.exceeded(address):
            raise StanzaError("resource-constraint",
                              text="too many registrations from your address; try later")
        xs.registration_attempted = True
        limit.record(address)
        if self.server.accounts.is_reserved(fields["username"]):
            # An admin's name (maybe one just removed): only the operator creates it.
            xs.registration_attempted = False
            raise StanzaError("not-allowed", text="this name is reserved")
        try:
            await accounts.create_account(self.server.engine,
                                          f"{fields['username']}@{self.server.domain}", fields["password"])
        except accounts.AccountError as exc:
            xs.registration_attempted = False  # a taken name or short password: may try again here
            condition = "conflict" if "exists" in str(exc) else "not-acceptable"
            raise StanzaError(condition, text=str(exc))
        log.msg(f"registered account {fields['username']}@{self.server.domain} (in-band, from {address})")
        return None
