"""Testing your own code against a real xep207 server: pytest with pytest-twisted.

In your project ``pytest`` is enough (pytest-twisted loads itself once installed);
this repository keeps the plugin off for its own suite, so here it is
``pytest -p pytest_twisted examples/test_embedding.py`` (``.ci/run`` does that).
"""

import pytest_twisted

from xep207.testing import server_fixture

# A server on a free port of 127.0.0.1 with two accounts, fresh for each test.
server = server_fixture({"alice": "wonderland", "bob": "builder!"})


@pytest_twisted.ensureDeferred
async def test_alice_writes_to_bob(server):
    alice = await server.login("alice")  # STARTTLS, SASL, bind, presence
    bob = await server.login("bob")
    alice.send("<message to='bob@localhost' type='chat'><body>hello</body></message>")
    message = await bob.wait_for(lambda stanza: stanza.name == "message")
    assert (message["from"], str(message.body)) == (alice.jid, "hello")


@pytest_twisted.ensureDeferred
async def test_bob_hears_what_alice_publishes(server):
    alice = await server.login("alice")
    bob = await server.login("bob")
    pubsub = ("<iq type='set' to='pubsub.localhost'>"
              "<pubsub xmlns='http://jabber.org/protocol/pubsub'>{}</pubsub></iq>")
    created = await alice.request(pubsub.format("<create node='news'/>"))
    assert created["type"] == "result"
    subscribed = await bob.request(pubsub.format(f"<subscribe node='news' jid='{bob.jid}'/>"))
    assert subscribed["type"] == "result"
    item = "<item><entry xmlns='urn:example'>xep207 is out</entry></item>"
    published = await alice.request(pubsub.format(f"<publish node='news'>{item}</publish>"))
    assert published["type"] == "result"
    event = await bob.wait_for(lambda stanza: stanza.name == "message" and stanza.event is not None)
    assert event.event.items["node"] == "news"
    assert str(event.event.items.item.entry) == "xep207 is out"
