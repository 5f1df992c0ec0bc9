"""Account management shared by ``xep207ctl`` and XEP-0077 in-band registration."""

from __future__ import annotations

import unicodedata

from twisted.words.protocols.jabber import jid as jidlib

from xep207.pubsub.kinds import Trusted
from xep207.server import sasl
from xep207.storage.interface import AccountExists

MIN_PASSWORD_LENGTH = 6
MAX_PASSWORD_LENGTH = 1024  # characters; a stanza could otherwise carry 256 KiB of "password"


class AccountError(Exception):
    pass


def normalize(jid: str, domain: str | None = None) -> jidlib.JID:
    """A bare account JID, nodeprep'd; a bare localpart takes ``domain``."""
    if "@" not in jid and domain:
        jid = f"{jid}@{domain}"
    try:
        parsed = jidlib.JID(jid)
    except jidlib.InvalidFormat as exc:
        raise AccountError(f"invalid JID {jid!r}: {exc}")
    if parsed.user is None or parsed.resource is not None:
        raise AccountError(f"an account is user@domain, not {jid!r}")
    return parsed


def check_password(password: str) -> None:
    """Long enough, not absurdly long, and no control characters (which no
    client can type and SASLprep would not map consistently)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise AccountError("the password contains control characters")
    if len(sasl.saslprep(password)) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")


async def create_account(engine, jid: str, password: str) -> str:
    """Create the account and its XEP-0207 nodes (``presence``, ``roster``)."""
    parsed = normalize(jid)
    assert parsed.user is not None  # normalize refuses a JID without a localpart
    check_password(password)
    account = sasl.make_account(parsed.user, parsed.host, password)
    try:
        await engine.create_account(Trusted(account.jid), account)
    except AccountExists:
        raise AccountError(f"{account.jid} exists already")
    return account.jid


async def change_password(engine, jid: str, password: str) -> None:
    parsed = normalize(jid)
    assert parsed.user is not None  # normalize refuses a JID without a localpart
    check_password(password)
    if await engine.storage.get_account(parsed.userhost()) is None:
        raise AccountError(f"no account {parsed.userhost()}")
    await engine.update_account(Trusted(parsed.userhost()),
                                sasl.make_account(parsed.user, parsed.host, password))


async def delete_account(engine, jid: str) -> None:
    """The account, its nodes and its one-to-one conversations go; contacts
    and rooms are told through the engine's events."""
    parsed = normalize(jid)
    if await engine.storage.get_account(parsed.userhost()) is None:
        raise AccountError(f"no account {parsed.userhost()}")
    await engine.delete_account(Trusted(parsed.userhost()), parsed.userhost())
