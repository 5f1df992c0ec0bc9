"""SASL for client streams: SCRAM-SHA-256, SCRAM-SHA-1 (RFC 5802/7677) and PLAIN.

Only SCRAM material is ever stored (salt, iteration count, StoredKey and
ServerKey per hash); PLAIN is verified by deriving the same keys from the
offered password. Mechanisms are small state machines: ``start`` and
``respond`` return a ``Challenge``, a ``Success`` or raise ``SASLFailure``;
a step that waits for the account to be read returns a Deferred of that
instead (when the account is at hand, the answer itself: no coroutine or
Deferred per step, issue 13).

Nothing an exchange answers depends on whether the account exists: an
unknown user gets a decoy account (salt and keys derived from a server secret,
so the salt is stable but not computable by a client), the same key
derivation and comparisons, and an authzid is judged only after the proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from dataclasses import dataclass
from functools import partial
from typing import Callable

from twisted.internet import defer

from xep207.deferreds import fired_with_value
from xep207.storage.records import Account

DEFAULT_ITERATIONS = 4096
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
# For a server without a data dir secret (embedding, unit tests): decoys stable for this process only.
_PROCESS_SECRET = os.urandom(32)


class SASLFailure(Exception):
    """An RFC 6120 §6.5 failure condition (``not-authorized``, ``malformed-request`` …)."""

    def __init__(self, condition: str, text: str | None = None):
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class Challenge:
    data: bytes


@dataclass(frozen=True)
class Success:
    user: str  # the authenticated localpart
    data: bytes | None = None


def saslprep(password: str) -> str:
    """Normalize a password (RFC 4013's mapping is NFKC plus space folding).

    Prohibited-character checks are left out: both sides of a comparison go
    through the same function, so a password is only ever compared to itself.
    """
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in password
                     if c not in "\u00ad\u200b\u2060\ufeff\u034f\u180b\u180c\u180d\ufe00")
    return unicodedata.normalize("NFKC", mapped)


def _hmac(key: bytes, message: bytes, algorithm: str) -> bytes:
    return hmac.new(key, message, algorithm).digest()


def scram_keys(password: str, salt: bytes, iterations: int, algorithm: str) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for a password, per RFC 5802 §3."""
    salted = hashlib.pbkdf2_hmac(algorithm, saslprep(password).encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key", algorithm)
    stored_key = hashlib.new(algorithm, client_key).digest()
    server_key = _hmac(salted, b"Server Key", algorithm)
    return stored_key, server_key


def make_account(user: str, domain: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> Account:
    """An ``Account`` holding SCRAM keys for both hashes; the password is not kept."""
    salt = os.urandom(16)
    sk1, svk1 = scram_keys(password, salt, iterations, "sha1")
    sk256, svk256 = scram_keys(password, salt, iterations, "sha256")
    return Account(user, domain, salt, iterations, sk1, svk1, sk256, svk256)


def _keys(account: Account, algorithm: str) -> tuple[bytes, bytes]:
    if algorithm == "sha1":
        return account.stored_key_sha1, account.server_key_sha1
    return account.stored_key_sha256, account.server_key_sha256


def verify_password(account: Account, password: str) -> bool:
    stored, _ = scram_keys(password, account.salt, account.iterations, "sha256")
    return hmac.compare_digest(stored, account.stored_key_sha256)


SECRET_FILE = "sasl-secret"


def load_secret(data_dir: str) -> bytes:
    """The server's secret for decoy credentials: made once in the data dir
    (mode 0600), read on every start so decoy salts survive restarts."""
    path = os.path.join(data_dir, SECRET_FILE)
    try:
        with open(path, "rb") as f:
            secret = f.read()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, exist_ok=True)
    secret = os.urandom(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(secret)
    return secret


def decoy_account(user: str, secret: bytes) -> Account:
    """What an unknown user is checked against: same shape and cost as a real
    account, keyed by the secret (no password matches it but by chance)."""
    derived = hmac.new(secret, b"decoy\0" + user.encode("utf-8"), "sha512").digest()
    salt, keys = derived[:16], derived[16:]
    return Account(user, "", salt, DEFAULT_ITERATIONS, hashlib.sha1(keys).digest(),
                   hashlib.sha1(keys[::-1]).digest(), hashlib.sha256(keys).digest(),
                   hashlib.sha256(keys[::-1]).digest())


# The credential lookup the mechanisms need: localpart -> Deferred of the Account or None.
AccountLookup = Callable[[str], "defer.Deferred[Account | None]"]


def _always(user: str) -> bool:
    return True


def then(result, step: Callable, *args):
    """``step(result, *args)`` once ``result`` is there: at once when it is
    a value or a Deferred that has fired (the account was at hand: no
    Deferred machinery per SASL step), else as the Deferred's callback."""
    if isinstance(result, defer.Deferred):
        if fired_with_value(result):
            return step(result.result, *args)
        return result.addCallback(step, *args)
    return step(result, *args)


class Mechanism:
    """A server-side SASL mechanism: ``start`` with the optional initial
    response, then ``respond`` to each client message.

    ``may_verify(user)`` is asked just before a password or proof is evaluated
    (the login throttle); ``secret`` keys the decoy accounts of unknown users.
    """

    user: str | None = None  # the claimed authentication identity, once known

    def __init__(self, lookup: AccountLookup, *, secret: bytes = b"",
                 may_verify: Callable[[str], bool] = _always):
        self._lookup = lookup
        self._secret = secret or _PROCESS_SECRET
        self._may_verify = may_verify

    def _credentials(self, user: str):
        """The account to check against, and whether it is real (or a Deferred of that)."""
        return then(self._lookup(user), self._real_or_decoy, user)

    def _real_or_decoy(self, account: Account | None, user: str) -> tuple[Account, bool]:
        if account is None:
            return decoy_account(user, self._secret), False
        return account, True

    def _check_allowed(self, user: str) -> None:
        if not self._may_verify(user):
            raise SASLFailure("temporary-auth-failure", "too many failed attempts; try later")

    def start(self, data: bytes | None):
        if not data:
            return Challenge(b"")  # no initial response: ask for one
        return self.respond(data)

    def respond(self, data: bytes):
        raise NotImplementedError


class Plain(Mechanism):
    """RFC 4616. Offered only over TLS unless the operator allows otherwise."""

    name = "PLAIN"

    def respond(self, data: bytes):
        try:
            authzid, authcid, password = data.decode("utf-8").split("\x00")
        except (UnicodeDecodeError, ValueError):
            raise SASLFailure("malformed-request")
        self.user = authcid
        self._check_allowed(authcid)
        return then(self._credentials(authcid), self._verify, authcid, authzid, password)

    def _verify(self, credentials: tuple[Account, bool], authcid: str, authzid: str, password: str) -> Success:
        account, real = credentials
        if not verify_password(account, password) or not real:
            raise SASLFailure("not-authorized")
        if authzid and authzid not in (authcid, account.jid):
            raise SASLFailure("invalid-authzid")
        return Success(account.user)


def _attributes(message: str) -> dict[str, str]:
    attributes = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise SASLFailure("malformed-request")
        attributes[part[0]] = part[2:]
    return attributes


def _unescape_username(name: str) -> str:
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise SASLFailure("malformed-request")
    return name.replace("=2C", ",").replace("=3D", "=")


class Scram(Mechanism):
    """RFC 5802 server side, without channel binding (the -PLUS variants are
    not offered, so a client's ``y`` flag is acceptable)."""

    def __init__(self, name: str, lookup: AccountLookup, nonce: Callable[[], str] | None = None, **options):
        super().__init__(lookup, **options)
        self.name = name
        self.algorithm = HASHES[name]
        self._nonce = nonce or (lambda: base64.b64encode(os.urandom(18)).decode("ascii"))
        self._state = "start"

    def respond(self, data: bytes):
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SASLFailure("malformed-request")
        if self._state == "start":
            return self._client_first(message)
        if self._state == "final":
            return self._client_final(message)
        raise SASLFailure("malformed-request")

    def _client_first(self, message: str):
        parts = message.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") and not parts[0].startswith("p="):
            raise SASLFailure("malformed-request")
        if parts[0].startswith("p="):
            raise SASLFailure("not-authorized", "channel binding is not supported")
        self._gs2_header = f"{parts[0]},{parts[1]},"
        self._authzid = parts[1][2:] if parts[1].startswith("a=") else ""
        self._client_first_bare = parts[2]
        attributes = _attributes(parts[2])
        if "m" in attributes or "n" not in attributes or "r" not in attributes:
            raise SASLFailure("malformed-request")
        self.user = self._authcid = _unescape_username(attributes["n"])
        # An unknown user gets the same exchange with a decoy account, failing
        # only at the proof, so the server does not reveal which accounts exist.
        return then(self._credentials(self._authcid), self._server_first_message, attributes["r"])

    def _server_first_message(self, credentials: tuple[Account, bool], client_nonce: str) -> Challenge:
        self._account, self._real = credentials
        salt, iterations = self._account.salt, self._account.iterations
        self._nonce_value = client_nonce + self._nonce()
        self._server_first = (f"r={self._nonce_value},s={base64.b64encode(salt).decode('ascii')},"
                              f"i={iterations}")
        self._state = "final"
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, message: str):
        self._state = "done"
        without_proof, _, proof_part = message.rpartition(",")
        if not proof_part.startswith("p="):
            raise SASLFailure("malformed-request")
        attributes = _attributes(without_proof)
        try:
            channel_binding = base64.b64decode(attributes.get("c", ""), validate=True).decode("utf-8")
            proof = base64.b64decode(proof_part[2:], validate=True)
        except (ValueError, UnicodeDecodeError):
            raise SASLFailure("incorrect-encoding")
        if channel_binding != self._gs2_header or attributes.get("r") != self._nonce_value:
            raise SASLFailure("not-authorized")
        self._check_allowed(self._authcid)
        stored_key, server_key = _keys(self._account, self.algorithm)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode("utf-8")
        signature = _hmac(stored_key, auth_message, self.algorithm)
        size = len(signature)
        client_key = (int.from_bytes(proof.ljust(size, b"\0")[:size], "big")
                      ^ int.from_bytes(signature, "big")).to_bytes(size, "big")
        valid = hmac.compare_digest(hashlib.new(self.algorithm, client_key).digest(), stored_key)
        if not valid or len(proof) != len(signature) or not self._real:
            raise SASLFailure("not-authorized")
        if self._authzid and self._authzid not in (self.user, self._account.jid):
            raise SASLFailure("invalid-authzid")  # only now: it would otherwise tell that the user exists
        server_signature = _hmac(server_key, auth_message, self.algorithm)
        return Success(self._account.user, b"v=" + base64.b64encode(server_signature))


def mechanisms(lookup: AccountLookup, *, plain: bool, secret: bytes = b"",
               may_verify: Callable[[str], bool] = _always) -> dict[str, Callable[[], Mechanism]]:
    """Mechanism factories by name, strongest first."""
    offered: dict[str, Callable[[], Mechanism]] = {
        name: partial(Scram, name, lookup, secret=secret, may_verify=may_verify) for name in HASHES}
    if plain:
        offered["PLAIN"] = partial(Plain, lookup, secret=secret, may_verify=may_verify)
    return offered
