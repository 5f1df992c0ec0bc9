"""Attacks on the idle TLS release (xep207.server.idle_tls): what the peer
may do at the quiet moment (renegotiate, close, write) and what the server
may write in the very turn the buffers go, and a session idle again and
again (the old buffers are freed, not kept)."""

from __future__ import annotations

import resource

from OpenSSL import SSL
from twisted.trial import unittest

from tests import test_idle_tls
from xep207.server import idle_tls


class PeerAtTheQuietMoment(unittest.TestCase):
    """A server connection driven by hand against a pyOpenSSL client."""

    setUp = test_idle_tls.ReleaseBuffers.setUp
    pump = test_idle_tls.ReleaseBuffers.pump

    def drain(self, side) -> bytes:
        received = b""
        while True:
            try:
                received += side.recv(65536)
            except SSL.WantReadError:
                return received

    def test_a_renegotiation_attempt_is_refused_across_releases(self):
        """TLS 1.2: the client asks to renegotiate while the server is quiet; the
        server refuses (OP_NO_RENEGOTIATION) through the fresh BIOs and releases again."""
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        self.client = SSL.Connection(context, None)
        self.client.set_connect_state()
        self.pump()
        self.assertEqual(self.server.get_protocol_version_name(), "TLSv1.2")
        self.assertTrue(idle_tls.release_buffers(self.server))
        self.client.renegotiate()
        try:
            self.client.do_handshake()
        except SSL.WantReadError:
            pass
        self.server.bio_write(self.client.bio_read(65536))
        self.assertFalse(idle_tls.release_buffers(self.server))  # the ClientHello waits, unread
        try:
            self.server.recv(100)
        except SSL.WantReadError:
            pass
        self.assertFalse(idle_tls.release_buffers(self.server))  # its no_renegotiation alert, unsent
        refusal = self.server.bio_read(65536)
        self.assertTrue(idle_tls.release_buffers(self.server))
        self.server.send(b"still here")
        self.client.bio_write(refusal + self.server.bio_read(65536))
        # The refusal reached the client through the fresh BIO (this client takes it as fatal).
        with self.assertRaisesRegex(SSL.Error, "no renegotiation"):
            self.client.recv(100)
        self.assertTrue(idle_tls.release_buffers(self.server))

    def test_session_tickets_and_a_close_notify_at_the_quiet_moment(self):
        """TLS 1.3: the tickets the server sends after the handshake reach the
        client after a release; a close_notify arriving at the quiet moment is
        read as the end of the stream after another release."""
        self.pump()
        self.assertTrue(idle_tls.release_buffers(self.server))
        self.client.send(b"hello")
        self.pump()
        self.assertEqual(self.server.recv(100), b"hello")
        self.assertTrue(self.client.get_session() is not None)
        self.client.shutdown()
        self.server.bio_write(self.client.bio_read(65536))
        self.assertFalse(idle_tls.release_buffers(self.server))  # the close_notify waits, unread
        with self.assertRaises(SSL.ZeroReturnError):
            self.server.recv(100)
        idle_tls.release_buffers(self.server)
        self.server.shutdown()  # the server's close_notify goes through the fresh BIO
        self.client.bio_write(self.server.bio_read(65536))
        with self.assertRaises(SSL.ZeroReturnError):
            self.client.recv(100)

    def test_a_half_record_across_a_release_is_read_whole(self):
        """OpenSSL keeps a record's first bytes itself once read: the rest comes
        through the fresh BIO and the record decrypts whole."""
        self.pump()
        self.client.send(b"x" * 3000)
        record = self.client.bio_read(65536)
        self.server.bio_write(record[:1000])
        with self.assertRaises(SSL.WantReadError):
            self.server.recv(65536)
        self.assertTrue(idle_tls.release_buffers(self.server))  # OpenSSL took the bytes; the BIOs are empty
        self.server.bio_write(record[1000:])
        self.assertEqual(self.drain(self.server), b"x" * 3000)

    def test_idle_again_and_again_frees_the_old_buffers(self):
        """Each release frees the BIOs it replaces: a large transfer before each of
        300 releases (100 KiB of BIO capacity each) leaves the process no bigger
        than a few releases do (30 MiB would stay if the old ones were kept)."""
        self.pump()
        data = b"y" * 100_000

        def cycle() -> None:
            self.server.sendall(data)
            self.client.bio_write(self.server.bio_read(200_000))
            self.client.sendall(data[:60_000])
            self.server.bio_write(self.client.bio_read(200_000))
            self.assertEqual(len(self.drain(self.server)), 60_000)
            self.assertEqual(len(self.drain(self.client)), 100_000)
            self.assertTrue(idle_tls.release_buffers(self.server))

        for _ in range(20):
            cycle()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        for _ in range(300):
            cycle()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        self.assertLess(grown, 10_000, f"{grown} KiB more after 300 releases")
