"""The servers the comparison harness drives: xep207 (SQLite or ``memory:``), and
private Prosody and ejabberd instances where their Debian packages are installed.

Each runs in its own temp dir, on free loopback ports, with no TLS on the
client port and no traffic shapers or session limits; accounts are made with
each server's own tools. Nothing here installs anything.

What differs between them, on purpose or because it cannot be helped, is
listed in ``CONFIG_NOTES`` (printed with the results).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from bench.common import DOMAIN, PASSWORD, ROOT, free_port

ITERATIONS = 4096  # SCRAM iteration count for every server's stored keys (ejabberd's fixed value)
MUC = "conference." + DOMAIN
PUBSUB = "pubsub." + DOMAIN

CONFIG_NOTES = [
    "All: loopback only, STARTTLS offered but not required (only the TLS memory row uses it; "
    "self-signed P-256 certificate, TLS 1.3; Prosody's LuaSec and ejabberd's fast_tls use Debian's "
    "OpenSSL 3.0, xep207's pyOpenSSL the OpenSSL bundled with cryptography), SCRAM keys stored with 4096 iterations "
    "(Prosody's default 10000 lowered; ejabberd's and xep207's default is 4096), no shapers "
    "or rate limits, no session limit, offline storage off where it is a module.",
    "xep207 archives every one-to-one and groupchat message (pair and room nodes); its SQLite "
    "row is the default configuration, memory: keeps the archive in dicts.",
    "One-to-one workloads (chat, latency) start once each pair's first message was delivered, "
    "for every server: that first message makes xep207's pair node (once per pair, ever).",
    "Logins: SCRAM-SHA-1 with 4096 iterations everywhere; the load generator caches SaltedPassword "
    "per account, every server keeps StoredKey/ServerKey (no PBKDF2 per login on either side). "
    "xep207 writes a log line per login (twistd's text log: ~35 µs of its CPU per login); Prosody "
    "and ejabberd log at level error and write none.",
    "Prosody 0.12: modules roster, saslauth, disco, ping, muc, pubsub (+ mam, muc_mam in the "
    "'+MAM' row, archive in its default internal file storage); network_backend epoll; the "
    "pubsub workload's publisher is a Prosody admin (only admins may create nodes there).",
    "ejabberd 23.01: Mnesia; modules roster, disco, ping, caps, muc, pubsub (flat) "
    "(+ mam with MUC archiving in the '+MAM' row, Mnesia backend); c2s_shaper none, "
    "max_fsm_queue default.",
]


def _certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for DOMAIN (xep207's own generator), for STARTTLS."""
    from xep207.server.tls import generate_self_signed

    cert, key = os.path.join(directory, f"{DOMAIN}.crt"), os.path.join(directory, f"{DOMAIN}.key")
    generate_self_signed(DOMAIN, cert, key)
    return cert, key


def _wait_port(port: int, popen: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"server exited with {popen.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # a separate process starting; not a test
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def _stop(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


class Server:
    """Common shape: ``start(users, admins)``, ``port``, ``pid`` (for RSS), ``stop()``.
    ``admins``: accounts that must be allowed to create pubsub nodes."""

    name = "?"
    room_service = MUC
    pubsub_service = PUBSUB
    popen: subprocess.Popen | None = None

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix=f"xep207-compare-{self.name.split()[0].lower()}-")
        self.port = free_port()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def available(self) -> bool:
        return True

    def stop(self) -> None:
        if self.popen is not None:
            _stop(self.popen)
        shutil.rmtree(self.directory, ignore_errors=True)


class Xep207(Server):
    room_service = "chat." + DOMAIN

    def __init__(self, storage: str = "sqlite", root: str = ROOT, label: str = ""):
        self.storage_kind = storage
        self.root = root  # another checkout's code, e.g. to compare before/after a change
        self.name = ("xep207 SQLite" if storage == "sqlite" else "xep207 memory") + label
        super().__init__()

    def start(self, users, admins=()) -> None:
        from bench.common import create_accounts, limits_off

        if self.storage_kind == "sqlite":
            storage = "sqlite:///" + os.path.join(self.directory, "xep207.sqlite")
            create_accounts(storage, users)
            extra = []
        else:
            storage = "memory:"
            extra = ["--registration"]  # the only way into a memory: server: XEP-0077, below
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                   "--logfile", os.path.join(self.directory, "twistd.log"),
                   "--pidfile", os.path.join(self.directory, "twistd.pid"), "xep207",
                   "--domain", DOMAIN, "--data-dir", self.directory, "--storage", storage,
                   "--c2s-port", str(self.port), "--c2s-interfaces", "127.0.0.1",
                   "--pubsub-domain", PUBSUB, "--chat-domain", self.room_service,
                   "--tls-optional", "--allow-plaintext-auth", *limits_off(self.root), *extra]
        profile = os.environ.get("XEP207_BENCH_PROFILE")
        if profile:
            command[3:3] = [f"--profile={profile}.{self.storage_kind}", "--profiler=cprofile", "--savestats"]
        syscalls = os.environ.get("XEP207_BENCH_STRACE")  # a file: syscall counts (strace -c -f)
        if syscalls and shutil.which("strace"):
            command[:0] = ["strace", "-c", "-f", "-o", f"{syscalls}.{self.storage_kind}"]
        self.popen = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=self.root), cwd=self.directory,
                                      start_new_session=True)
        _wait_port(self.port, self.popen)
        if self.storage_kind == "memory":
            from bench.register import register_in_band

            register_in_band(self.port, users)


PROSODY_CONFIG = """
run_as_root = true
admins = {{ {admins} }}
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
log = {{ {{ levels = {{ min = "error" }}, to = "file", filename = "{dir}/prosody.log" }} }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
admin_socket = "{dir}/admin.sock"
c2s_require_encryption = false
ssl = {{ certificate = "{cert}", key = "{key}" }}
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
default_iteration_count = {iterations}
storage = "internal"
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "admin_shell"{mam} }}
modules_disabled = {{ "s2s", "offline", "c2s_limits", "limits" }}
archive_expires_after = "never"
default_archive_policy = true
VirtualHost "{domain}"
Component "{muc}" "muc"
  modules_enabled = {{ {muc_mam} }}
  muc_room_default_history_length = 0
  muc_room_locking = false
  muc_log_by_default = true
  muc_log_all_rooms = true
Component "{pubsub}" "pubsub"
"""


class Prosody(Server):
    def __init__(self, mam: bool = False):
        self.mam = mam
        self.name = "Prosody+MAM" if mam else "Prosody"
        super().__init__()

    def available(self) -> bool:
        return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None

    def start(self, users, admins=()) -> None:
        for sub in ("data", "certs"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        self.config = os.path.join(self.directory, "prosody.cfg.lua")
        cert, key = _certificate(os.path.join(self.directory, "certs"))
        with open(self.config, "w") as f:
            f.write(PROSODY_CONFIG.format(dir=self.directory, cert=cert, key=key, c2s=self.port, domain=DOMAIN,
                                          muc=MUC, pubsub=PUBSUB,
                                          iterations=ITERATIONS, admins=", ".join(f'"{a}@{DOMAIN}"' for a in admins),
                                          mam=', "mam"' if self.mam else "",
                                          muc_mam='"muc_mam"' if self.mam else ""))
        self.popen = subprocess.Popen(["prosody", "--config", self.config, "-F"], cwd=self.directory,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.popen)
        # Prosody's own tool: one admin shell session creating every account
        # (``prosodyctl register`` costs a Lua start-up per account).
        script = "".join(f'user:create("{user}@{DOMAIN}", "{PASSWORD}")\n' for user in users)
        completed = subprocess.run(["prosodyctl", "--config", self.config, "shell"], input=script, text=True,
                                   capture_output=True, timeout=600)
        if completed.returncode != 0 or completed.stdout.count("User created") < len(users):
            raise RuntimeError(f"prosodyctl shell: {completed.stdout[-500:]} {completed.stderr[-500:]}")


EJABBERD_CONFIG = """
hosts: ["{domain}"]
certfiles: ["{pem}"]
loglevel: error
log_rotate_count: 0
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
listen:
  - port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: false
    shaper: none
    access: all
    max_stanza_size: 262144
    backlog: 1024
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
shaper_rules:
  max_user_sessions: 100000
  c2s_shaper: none
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_caps: {{}}
  mod_muc:
    host: "{muc}"
    access: all
    access_create: local
    access_persistent: local
    max_users: 100000
    max_user_conferences: 100000
    max_users_presence: 100000
    history_size: 0
    min_message_interval: 0
    min_presence_interval: 0
    default_room_options:
      mam: {mam}
  mod_pubsub:
    host: "{pubsub}"
    access_createnode: local
    plugins: ["flat"]
    max_subscriptions_node: 100000
{mam_module}
"""


class Ejabberd(Server):
    """ejabberd straight from ``erl`` (``ejabberdctl`` insists on su to its system
    user), with its own node name and cookie, and no epmd: a fixed distribution
    port that only ``register`` below uses."""

    LIBS = "/usr/lib/x86_64-linux-gnu"

    def __init__(self, mam: bool = False):
        self.mam = mam
        self.name = "ejabberd+MAM" if mam else "ejabberd"
        super().__init__()
        self.node = f"bench{secrets.token_hex(4)}@localhost"
        self.cookie = secrets.token_hex(16)
        self.dist_port = free_port()

    def available(self) -> bool:
        return shutil.which("erl") is not None and any(
            d.startswith("ejabberd-") for d in os.listdir(self.LIBS)) if os.path.isdir(self.LIBS) else False

    def _erl(self, *args) -> list[str]:
        return ["erl", "-sname", *args[:1], "-setcookie", self.cookie, "-start_epmd", "false",
                "-erl_epmd_port", str(self.dist_port),
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}", *args[1:]]

    def start(self, users, admins=()) -> None:
        config = os.path.join(self.directory, "ejabberd.yml")
        cert, key = _certificate(self.directory)
        pem = os.path.join(self.directory, "ejabberd.pem")
        with open(pem, "w") as out, open(cert) as c, open(key) as k:
            out.write(c.read() + k.read())
        with open(config, "w") as f:
            f.write(EJABBERD_CONFIG.format(domain=DOMAIN, pem=pem, c2s=self.port, muc=MUC, pubsub=PUBSUB,
                                           mam="true" if self.mam else "false",
                                           mam_module="  mod_mam:\n    db_type: mnesia\n    default: always\n"
                                           if self.mam else ""))
        env = dict(os.environ, EJABBERD_CONFIG_PATH=config, ERL_LIBS=self.LIBS, HOME=self.directory,
                   EJABBERD_LOG_PATH=os.path.join(self.directory, "ejabberd.log"),
                   ERL_CRASH_DUMP=os.path.join(self.directory, "erl_crash.dump"))
        spool = os.path.join(self.directory, "spool")
        os.makedirs(spool)
        self.popen = subprocess.Popen(
            self._erl(self.node, "-noinput", "+K", "true", "+P", "250000", "-mnesia", "dir", f'"{spool}"',
                      "-s", "ejabberd"),
            env=env, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _wait_port(self.port, self.popen)
        # ejabberd's own account API (what ``ejabberdctl register`` calls), all
        # accounts in one hidden node instead of one node start per account.
        names = ",".join(f'<<"{user}">>' for user in users)
        code = (f"Node = '{self.node}', "
                f"R = [rpc:call(Node, ejabberd_auth, try_register, [U, <<\"{DOMAIN}\">>, <<\"{PASSWORD}\">>]) "
                f"|| U <- [{names}]], "
                "Bad = [X || X <- R, X =/= ok], io:format(\"~p~n\", [Bad]), "
                "halt(case Bad of [] -> 0; _ -> 1 end).")
        controller = f"ctl{secrets.token_hex(4)}@localhost"
        completed = subprocess.run(self._erl(controller, "-hidden", "-dist_listen", "false", "-noshell",
                                             "-eval", code), env=env, capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            raise RuntimeError(f"ejabberd register: {completed.stdout[-500:]} {completed.stderr[-500:]}")

    @property
    def pid(self) -> int:
        return self.popen.pid  # erl execs erlexec, which execs beam.smp: one pid


def all_servers() -> list[Server]:
    return [Prosody(), Prosody(mam=True), Ejabberd(), Ejabberd(mam=True), Xep207("sqlite"), Xep207("memory")]
