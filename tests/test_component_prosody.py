"""Component mode end to end: Prosody from Debian, `twistd xep207 component`, slixmpp clients."""

import os

from twisted.trial import unittest

from tests.peers import Prosody, run_client, temp_dir, twistd

DOMAIN = "localhost"
SERVICE = "pubsub.localhost"


class ComponentWithProsody(unittest.TestCase):
    """Synchronous tests: the peers are separate processes; nothing here needs the reactor."""

    def setUp(self):
        self.tmp = temp_dir(self)
        self.prosody = Prosody(os.path.join(self.tmp, "prosody"), DOMAIN, SERVICE, "component-secret")
        for user in ("alice", "bob"):
            self.prosody.register(user, "wonderland")
        self.addCleanup(self.prosody.stop)  # before start: a start that times out still stops it
        self.prosody.start()

    def test_slixmpp_clients_use_our_pubsub_through_prosody(self):
        secret_file = os.path.join(self.tmp, "secret")
        with open(secret_file, "w") as f:
            f.write("component-secret\n")
        component = twistd(["component", "--jid", SERVICE, "--secret-file", secret_file,
                            "--host", "127.0.0.1", "--port", str(self.prosody.component_port),
                            "--storage", "sqlite:///" + os.path.join(self.tmp, "pubsub.sqlite")], self.tmp)
        try:
            component.wait_for(f"xep207 component {SERVICE} online")
            report = run_client("pubsub_scenario.py", "127.0.0.1", self.prosody.c2s_port, DOMAIN, SERVICE,
                                "wonderland")
        finally:
            component.stop()
        assert report["identities"] == ["pubsub/service"]
        assert report["publish_feature"] is True
        assert report["title"] == "Princely Musings"
        assert report["subscription"] == "subscribed"
        assert report["published_id"] == "first"
        sender, item_id, payload = report["notification"]
        assert (sender, item_id) == (SERVICE, "first")
        assert "Soliloquy" in payload
        assert report["items"] == ["first"]
        assert report["bob_delete"] == "forbidden"

    def test_component_reconnects_after_server_restart(self):
        component = twistd(["component", "--jid", SERVICE, "--secret", "component-secret",
                            "--host", "127.0.0.1", "--port", str(self.prosody.component_port),
                            "--storage", "memory:"], self.tmp)
        try:
            component.wait_for(f"xep207 component {SERVICE} online")
            self.prosody.stop()
            component.wait_for("offline")
            self.prosody.start()
            component.wait_for(f"xep207 component {SERVICE} online", timeout=60)
            # Twisted's "Starting factory <... object at 0x...>" once came with every attempt.
            self.assertFalse([line for line in component.lines if "Starting factory" in line])
        finally:
            component.stop()

    def test_wrong_secret_is_reported_and_stops(self):
        component = twistd(["component", "--jid", SERVICE, "--secret", "wrong",
                            "--host", "127.0.0.1", "--port", str(self.prosody.component_port),
                            "--storage", "memory:"], self.tmp)
        try:
            line = component.wait_for("the server refused the component")
            self.assertIn("xep207: fatal:", line)
            self.assertIn("(not-authorized)", line)
            self.assertNotEqual(component.wait_exit(), 0, component.output())
        finally:
            component.stop()
        assert not os.path.exists(os.path.join(self.tmp, "pubsub.sqlite"))
