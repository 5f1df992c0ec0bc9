"""Component mode end to end: Prosody from Debian, `twistd xep207 component`, slixmpp clients."""

import os

import pytest

from peers import Prosody, run_client, twistd

DOMAIN = "localhost"
SERVICE = "pubsub.localhost"


@pytest.fixture
def prosody(tmp_path):
    server = Prosody(str(tmp_path / "prosody"), DOMAIN, SERVICE, "component-secret")
    for user in ("alice", "bob"):
        server.register(user, "wonderland")
    server.start()
    yield server
    server.stop()


def test_slixmpp_clients_use_our_pubsub_through_prosody(prosody, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("component-secret\n")
    component = twistd(["component", "--jid", SERVICE, "--secret-file", str(secret_file),
                        "--host", "127.0.0.1", "--port", str(prosody.component_port),
                        "--storage", "sqlite:///" + str(tmp_path / "pubsub.sqlite")], str(tmp_path))
    try:
        component.wait_for(f"xep207 component {SERVICE} online")
        report = run_client("pubsub_scenario.py", "127.0.0.1", prosody.c2s_port, DOMAIN, SERVICE,
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


def test_component_reconnects_after_server_restart(prosody, tmp_path):
    component = twistd(["component", "--jid", SERVICE, "--secret", "component-secret",
                        "--host", "127.0.0.1", "--port", str(prosody.component_port),
                        "--storage", "memory:"], str(tmp_path))
    try:
        component.wait_for(f"xep207 component {SERVICE} online")
        prosody.stop()
        component.wait_for("offline")
        prosody.start()
        component.wait_for(f"xep207 component {SERVICE} online", timeout=60)
    finally:
        component.stop()


def test_wrong_secret_is_reported_and_stops(prosody, tmp_path):
    component = twistd(["component", "--jid", SERVICE, "--secret", "wrong",
                        "--host", "127.0.0.1", "--port", str(prosody.component_port),
                        "--storage", "memory:"], str(tmp_path))
    try:
        component.wait_for("the server refused the component (not-authorized)")
        component.wait_for("Main loop terminated")
    finally:
        component.stop()
    assert not os.path.exists(tmp_path / "pubsub.sqlite")
