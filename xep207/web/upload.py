"""XEP-0363 HTTP File Upload: slots requested over XMPP at ``upload.DOMAIN``,
files PUT and GET on the HTTP port.

A slot is stateless: its PUT URL carries an expiry, the owner and an HMAC over
the path, size, content type, expiry and owner, keyed by a key derived from the
server's secret (never the SASL decoy key itself). A PUT must match what was
signed: the exact size, the content type asked for, before expiry, once.

Files live under ``DATA_DIR/upload`` (0700), each named by the slot's random id
(``upload/<32 hex>``, 0600) beside a small JSON record of owner, name, type,
size and time; a name a client gave is only ever shown back (URL, header),
never used as a path. Uploaded files are HTTP resources, not XMPP state: they are
outside the pubsub engine, like the TLS certificate. A timer driven by an
injectable clock removes files older than the retention.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes

from twisted.application import service
from twisted.internet import task
from twisted.protocols.basic import FileSender
from twisted.python import log
from twisted.web import server as web_server
from twisted.web.resource import Resource
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.subprotocols import IQHandlerMixin, XMPPHandler
from zope.interface import implementer

NS_UPLOAD = "urn:xmpp:http:upload:0"
PATH = b"upload"
SLOT_LIFETIME = 300.0  # seconds a PUT URL stays valid
SLOT_ID = re.compile(r"\A[0-9a-f]{32}\Z")  # \Z: "$" would let a trailing newline through
CONTENT_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}$")
# Shown inline by a browser without running anything; the rest is an attachment.
INLINE = re.compile(r"^(image/(png|jpeg|gif|webp|avif)|audio/[a-z0-9.+-]+|video/[a-z0-9.+-]+|text/plain)$")
DEFAULT_TYPE = "application/octet-stream"


def derive_key(secret: bytes) -> bytes:
    """The slot-signing key: the server secret through HMAC with a label of its own,
    so a slot signature reveals nothing about the SASL decoy key."""
    return hmac.new(secret or secrets.token_bytes(32), b"xep207 XEP-0363 slot signatures v1",
                    hashlib.sha256).digest()


@dataclass(frozen=True)
class UploadPolicy:
    """What the operator configured (``--upload-*``)."""

    max_size: int
    quota: int
    retention: float


@dataclass(frozen=True)
class Slot:
    """What a PUT URL grants; everything but ``signature`` is signed."""

    slot_id: str
    filename: str
    size: int
    content_type: str  # "" when the client named none
    expires: int
    owner: str  # bare JID

    def message(self) -> bytes:
        return "\0".join((self.slot_id, self.filename, str(self.size), self.content_type,
                          str(self.expires), self.owner)).encode("utf-8")

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self.message(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    slot_id: str
    owner: str
    filename: str
    size: int
    content_type: str
    created: float


def clean_filename(name: str) -> str:
    """A name fit for a URL segment and a header: no path separators, no control
    characters, at most 200 characters. Empty when nothing is left."""
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if c in "/\\" else c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".")
    return name[:200]


def content_disposition(filename: str, content_type: str) -> str:
    """``inline`` only for types a browser shows without running them (RFC 6266,
    with an ASCII fallback beside the UTF-8 name)."""
    kind = "inline" if INLINE.match(content_type) else "attachment"
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._- ") else "_" for c in filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _older_than(path: str, seconds: float) -> bool:
    import time

    try:
        return time.time() - os.path.getmtime(path) > seconds
    except OSError:
        return False


class FileStore:
    """Uploaded files and their records under one directory; an index in memory
    (rebuilt from the records at start) answers quota and GET.

    ``shared``: the processes of a cluster write the same directory
    (``--upload-dir``), so the disk is the truth: a file another process
    stored is read from its record when asked for, quota and expiry rescan
    the records, and a slot is taken by whoever links its file first."""

    def __init__(self, directory: str, shared: bool = False):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.shared = shared
        self.files: dict[str, StoredFile] = {}
        self._load(at_start=True)

    def _load(self, at_start: bool = False) -> None:
        if not at_start:
            self.files = {}
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".part"):
                # An upload cut short by a stop; shared, another process may be
                # writing it: only one left for a day is (its process died).
                if (at_start and not self.shared) or (self.shared and _older_than(path, 86400)):
                    os.unlink(path)
                continue
            if not name.endswith(".json") or not SLOT_ID.match(name[:-5]):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    record = StoredFile(**json.load(f))
            except (OSError, ValueError, TypeError) as exc:
                log.msg(f"upload: ignoring unreadable record {path}: {exc}")
                continue
            if os.path.exists(self.path(record.slot_id)):
                self.files[record.slot_id] = record

    def path(self, slot_id: str) -> str:
        assert SLOT_ID.match(slot_id)  # never a name from outside
        return os.path.join(self.directory, slot_id)

    def get(self, slot_id: str) -> StoredFile | None:
        """The stored file of a slot (shared: stored by any process, still there)."""
        record = self.files.get(slot_id)
        if not self.shared:
            return record
        base = self.path(slot_id)
        if not os.path.exists(base):
            self.files.pop(slot_id, None)  # expired by another process
            return None
        if record is None:
            try:
                with open(base + ".json", encoding="utf-8") as f:
                    record = StoredFile(**json.load(f))
            except (OSError, ValueError, TypeError):
                return None
            self.files[slot_id] = record
        return record

    def used_by(self, owner: str) -> int:
        if self.shared:
            self._load()
        return sum(f.size for f in self.files.values() if f.owner == owner)

    @contextmanager
    def quota_lock(self):
        """Shared: held while one process counts an account's usage and
        reserves a slot, so that two processes never both grant the last of
        a quota (one process alone needs none: it counts synchronously)."""
        if not self.shared:
            yield
            return
        # (the directory's secret, there from the start, is the lock: no file more)
        descriptor = os.open(os.path.join(self.directory, "slot-secret"), os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # (releases the lock)

    def reserve(self, slot_id: str, owner: str, size: int, expires: int) -> None:
        """Shared: a slot issued, not yet used, counted against its owner's
        quota by every process (``<slot id>.slot``, never served)."""
        if self.shared:
            descriptor = os.open(self.path(slot_id) + ".slot", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                json.dump({"owner": owner, "size": size, "expires": expires}, f)

    def reserved_by(self, owner: str, now: float) -> int:
        """Shared: the bytes of ``owner``'s slots issued by any process, neither
        used nor expired (the others are removed as they are met)."""
        total = 0
        for name in os.listdir(self.directory):
            if not name.endswith(".slot") or not SLOT_ID.match(name[:-5]):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
                expires, size, who = int(record["expires"]), int(record["size"]), str(record["owner"])
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if expires < now or os.path.exists(self.path(name[:-5])):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            elif who == owner:
                total += size
        return total

    def open_new(self, slot_id: str):
        """A file to write an upload to; FileExistsError when the slot was used."""
        if self.get(slot_id) is not None:
            raise FileExistsError(slot_id)
        descriptor = os.open(self.path(slot_id) + ".part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(descriptor, "wb")

    def commit(self, record: StoredFile) -> None:
        """The written ``.part`` becomes the file, with its record (written
        first: whoever sees the file can read it). FileExistsError when the
        slot's file appeared meanwhile (another process took it)."""
        base = self.path(record.slot_id)
        if os.path.exists(base):
            raise FileExistsError(record.slot_id)
        descriptor = os.open(base + ".json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as f:
            json.dump(record.__dict__, f)
        os.link(base + ".part", base)  # (fails if it exists: one upload per slot)
        os.unlink(base + ".part")
        if self.shared:
            try:
                os.unlink(base + ".slot")  # used: no longer reserved
            except FileNotFoundError:
                pass
        self.files[record.slot_id] = record

    def discard(self, slot_id: str) -> None:
        for suffix in (".part", "", ".json", ".slot"):
            try:
                os.unlink(self.path(slot_id) + suffix)
            except FileNotFoundError:
                pass
        self.files.pop(slot_id, None)

    def expire(self, now: float, retention: float) -> list[str]:
        """Remove every file older than ``retention`` seconds; their slot ids."""
        if self.shared:
            self._load()
        old = [f.slot_id for f in self.files.values() if now - f.created >= retention]
        for slot_id in old:
            self.discard(slot_id)
        if old:
            log.msg(f"upload: removed {len(old)} file(s) past the retention")
        return old


class ExpiryTimer(service.Service):
    """Removes old files every ``interval`` seconds of ``clock``."""

    def __init__(self, upload: UploadService, interval: float):
        self.upload = upload
        self.interval = interval
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(lambda: self.upload.store.expire(self.upload.clock.seconds(),
                                                                       self.upload.policy.retention))
        self._loop.clock = self.upload.clock
        self._loop.start(self.interval, now=True).addErrback(log.err, "upload expiry")

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()


class UploadService:
    """Slots and files: the decisions, shared by the XMPP handler and the HTTP resource."""

    def __init__(self, domain: str, service_jid: str, policy: UploadPolicy, store: FileStore, key: bytes,
                 base_url, clock=None):
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.domain = domain
        self.jid = service_jid
        self.policy = policy
        self.store = store
        self._key = key
        self._base_url = base_url  # a callable: the port is known once listening
        self.clock = clock
        self._pending: dict[str, Slot] = {}  # issued, not yet uploaded: counted against the quota

    def _pending_for(self, owner: str) -> int:
        now = self.clock.seconds()
        if self.store.shared:
            return self.store.reserved_by(owner, now)  # every process's slots, not only ours
        for slot_id, slot in list(self._pending.items()):
            if slot.expires < now or slot_id in self.store.files:
                del self._pending[slot_id]
        return sum(s.size for s in self._pending.values() if s.owner == owner)

    def request_slot(self, requester: jidlib.JID, filename: str, size: str | None,
                     content_type: str | None) -> Slot:
        """A slot for a local account's file, or the XEP-0363 §5 error."""
        if requester.host != self.domain or not requester.user:
            raise StanzaError("forbidden", text="only accounts of this server may upload")
        name = clean_filename(filename or "")
        if not name:
            raise StanzaError("bad-request", text="a filename is required")
        try:
            length = int(size or "")
        except ValueError:
            raise StanzaError("bad-request", text="size is a number of bytes") from None
        if length <= 0:
            raise StanzaError("bad-request", text="size is a positive number of bytes")
        kind = (content_type or "").strip().lower()
        if kind and not CONTENT_TYPE.match(kind):
            raise StanzaError("bad-request", text="content-type is a MIME type")
        if length > self.policy.max_size:
            raise FileTooLarge(self.policy.max_size)
        owner = requester.userhost()
        with self.store.quota_lock():
            if self.store.used_by(owner) + self._pending_for(owner) + length > self.policy.quota:
                raise StanzaError("resource-constraint", text="upload quota reached; old files expire in time")
            slot = Slot(secrets.token_hex(16), name, length, kind, int(self.clock.seconds() + SLOT_LIFETIME),
                        owner)
            self.store.reserve(slot.slot_id, owner, length, slot.expires)
        self._pending[slot.slot_id] = slot
        return slot

    def get_url(self, slot_id: str, filename: str) -> str:
        return f"{self._base_url()}/upload/{slot_id}/{quote(filename, safe='')}"

    def put_url(self, slot: Slot) -> str:
        query = f"e={slot.expires}&u={quote(slot.owner, safe='')}&t={quote(slot.content_type, safe='')}" \
                f"&s={slot.signature(self._key)}"
        return f"{self.get_url(slot.slot_id, slot.filename)}?{query}"

    def verify(self, slot: Slot, signature: str) -> bool:
        return hmac.compare_digest(slot.signature(self._key), signature)


class FileTooLarge(StanzaError):
    """XEP-0363 §5: ``not-acceptable`` with the limit."""

    def __init__(self, max_size: int):
        super().__init__("not-acceptable", type="modify", text=f"the largest file is {max_size} bytes")
        self.max_size = max_size

    def getElement(self):
        element = super().getElement()
        too_large = element.addElement((NS_UPLOAD, "file-too-large"))
        too_large.addElement("max-file-size", content=str(self.max_size))
        return element


@implementer(disco.IDisco)
class UploadHandler(XMPPHandler, IQHandlerMixin):
    """``upload.DOMAIN``: XEP-0030 identity and limits, and slot requests."""

    iqHandlers = {f"/iq[@type='get']/request[@xmlns='{NS_UPLOAD}']": "on_request"}

    def __init__(self, upload: UploadService):
        super().__init__()
        self.upload = upload

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='get']/request[@xmlns='{NS_UPLOAD}']", self.handleRequest)

    def on_request(self, iq):
        iq.handled = True
        request = iq.request
        slot = self.upload.request_slot(jidlib.JID(iq["from"]), request.getAttribute("filename", ""),
                                        request.getAttribute("size"), request.getAttribute("content-type"))
        answer = domish.Element((NS_UPLOAD, "slot"))
        answer.addElement("put")["url"] = self.upload.put_url(slot)
        answer.addElement("get")["url"] = self.upload.get_url(slot.slot_id, slot.filename)
        return answer

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier or target.full() != self.upload.jid:
            return []
        form = data_form.Form("result", formNamespace=NS_UPLOAD)
        form.addField(data_form.Field(var="max-file-size", value=str(self.upload.policy.max_size)))
        return [disco.DiscoIdentity("store", "file", "HTTP File Upload"), disco.DiscoFeature(NS_UPLOAD), form]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class UploadResource(Resource):
    """``/upload/<slot id>/<name>``: PUT once with a signed URL, then GET."""

    isLeaf = True

    def __init__(self, upload: UploadService):
        super().__init__()
        self.upload = upload

    def _cors(self, request) -> None:
        # Web clients PUT and GET from their own page's origin (XEP-0363 §6).
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, PUT, OPTIONS")
        request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type")
        request.setHeader(b"Access-Control-Max-Age", b"86400")

    def _target(self, request) -> tuple[str, str] | None:
        return self._target_of(request.postpath)

    @staticmethod
    def _target_of(postpath: list[bytes]) -> tuple[str, str] | None:
        """(slot id, file name) of ``/upload/<slot id>/<name>``, percent-decoded."""
        if len(postpath) != 2:
            return None
        try:
            slot_id, name = (part.decode("utf-8") for part in postpath)
        except UnicodeDecodeError:
            return None
        if not SLOT_ID.match(slot_id):
            return None
        return slot_id, name

    def _status(self, request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return (text + "\n").encode("utf-8")

    def render_OPTIONS(self, request) -> bytes:
        self._cors(request)
        request.setResponseCode(204)
        return b""

    def _signed_slot(self, postpath: list[bytes], query_string: bytes, length: int) -> Slot | None:
        """The slot a PUT URL grants for a body of ``length`` bytes, if its signature holds."""
        target = self._target_of(postpath)
        if target is None:
            return None
        query = parse_qs(query_string.decode("utf-8", "replace"))

        def one(key: str) -> str:
            values = query.get(key, [""])
            return values[0] if len(values) == 1 else ""

        try:
            expires = int(one("e"))
        except ValueError:
            return None
        slot = Slot(target[0], target[1], length, one("t"), expires, one("u"))
        # a wrong size is a wrong signature: the size was signed
        return slot if self.upload.verify(slot, one("s")) else None

    def grants_body(self, method: bytes, target: bytes, length: int) -> bool:
        """Whether a request may send a body of ``length`` bytes, asked before it is
        read: only a PUT to a live, unused slot signed for exactly that size."""
        path, _, query_string = target.partition(b"?")
        prefix = b"/" + PATH + b"/"
        if method != b"PUT" or not path.startswith(prefix):
            return False
        slot = self._signed_slot([unquote_to_bytes(p) for p in path[len(prefix):].split(b"/")], query_string, length)
        return (slot is not None and slot.expires >= self.upload.clock.seconds()
                and length <= self.upload.policy.max_size and slot.slot_id not in self.upload.store.files)

    def render_PUT(self, request) -> bytes:
        self._cors(request)
        if self._target(request) is None:
            return self._status(request, 404, "no such slot")
        try:
            size = int(request.getHeader(b"content-length") or "")
        except ValueError:
            return self._status(request, 403, "not a valid upload URL")
        slot = self._signed_slot(request.postpath, request.uri.partition(b"?")[2], size)
        if slot is None:
            return self._status(request, 403, "not a valid upload URL for this size and type")
        slot_id, name = slot.slot_id, slot.filename
        if slot.expires < self.upload.clock.seconds():
            return self._status(request, 403, "this upload URL has expired")
        sent_type = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
        if slot.content_type and sent_type != slot.content_type:
            return self._status(request, 403, f"the slot is for {slot.content_type}")
        if size > self.upload.policy.max_size:
            return self._status(request, 413, "file too large")
        try:
            out = self.upload.store.open_new(slot_id)
        except FileExistsError:
            return self._status(request, 409, "this slot was used already")
        written = 0
        try:
            with out:
                request.content.seek(0)
                while chunk := request.content.read(65536):
                    written += len(chunk)
                    if written > size:
                        break
                    out.write(chunk)
        except OSError as exc:
            self.upload.store.discard(slot_id)
            log.msg(f"upload: cannot store {slot_id}: {exc}")
            return self._status(request, 500, "cannot store the file")
        if written != size:
            self.upload.store.discard(slot_id)
            return self._status(request, 400, "the body is not the size announced")
        try:
            self.upload.store.commit(StoredFile(slot_id, slot.owner, name, size,
                                                slot.content_type or DEFAULT_TYPE, self.upload.clock.seconds()))
        except FileExistsError:
            os.unlink(self.upload.store.path(slot_id) + ".part")
            return self._status(request, 409, "this slot was used already")
        log.msg(f"upload: {slot.owner} stored {size} bytes as {slot_id}")
        request.setResponseCode(201)
        return b""

    def _stored(self, request) -> StoredFile | None:
        target = self._target(request)
        if target is None:
            return None
        record = self.upload.store.get(target[0])
        if record is None or record.filename != target[1]:
            return None
        return record

    def render_GET(self, request):
        self._cors(request)
        record = self._stored(request)
        if record is None:
            return self._status(request, 404, "no such file")
        request.setHeader(b"Content-Type", record.content_type.encode("ascii"))
        request.setHeader(b"Content-Length", str(record.size).encode("ascii"))
        request.setHeader(b"Content-Disposition",
                          content_disposition(record.filename, record.content_type).encode("ascii"))
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Content-Security-Policy", b"default-src 'none'; sandbox")
        request.setHeader(b"Cache-Control", b"private, max-age=86400")
        if request.method == b"HEAD":
            return b""
        try:
            f = open(self.upload.store.path(record.slot_id), "rb")
        except OSError:
            request.setResponseCode(404)
            return b""
        d = FileSender().beginFileTransfer(f, request)

        def done(_):
            f.close()
            if not request.finished:
                request.finish()

        d.addBoth(done)
        return web_server.NOT_DONE_YET

    def render_HEAD(self, request):
        return self.render_GET(request)


def shared_secret(directory: str) -> bytes:
    """The slot-signing secret of a shared upload directory: made by the
    first process to start (0600, never served: not a slot id), read by the
    rest. Written aside, then linked into place: nobody reads half of it."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "slot-secret")
    if not os.path.exists(path):
        aside = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process was first: its secret is everyone's
        finally:
            os.unlink(aside)
    with open(path, "rb") as f:
        return f.read()


def install(server, web, options) -> UploadService:
    """The upload service of a ``Server`` on its ``WebServer``."""
    from wokkel.component import InternalComponent

    from xep207.discovery import DiscoHandler

    upload_domain = options["upload-domain"]
    policy = UploadPolicy(options["upload-max-size"], options["upload-quota"], float(options["upload-retention"]))
    shared = options.get("upload-dir")
    if options.get("cluster") and not shared:
        from xep207.startup import StartupError

        raise StartupError("--cluster with uploads needs --upload-dir, a directory every process shares "
                           "(or --no-upload): each process's data dir is its own")
    store = FileStore(shared or os.path.join(options["data-dir"], "upload"), shared=bool(shared))
    # Shared: a slot signed by one process is accepted by every other (the key is the directory's).
    secret = shared_secret(shared) if shared else server.policy.sasl_secret
    upload = UploadService(server.domain, upload_domain, policy, store, derive_key(secret),
                           lambda: web.base_url)
    component = InternalComponent(server.router, upload_domain)
    for handler in (UploadHandler(upload), DiscoHandler()):
        handler.setHandlerParent(component)
    component.setServiceParent(server.started)
    server.router.internal_routes.add(upload_domain)
    ExpiryTimer(upload, min(3600.0, policy.retention / 4)).setServiceParent(server.started)
    resource = UploadResource(upload)
    web.add(PATH, resource)
    web.grant_large_bodies(resource.grants_body)
    log.msg(f"XEP-0363 uploads at {upload_domain}, files in {store.directory}")
    return upload


__all__: list[Any] = ["NS_UPLOAD", "UploadService", "FileStore", "ExpiryTimer", "install"]
