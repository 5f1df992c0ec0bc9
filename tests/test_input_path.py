"""The input side of the hot path (issue 13): a client stream's elements reach
their observers without xish's XPath dispatch, STANZA hooks only see the
stanzas they asked for, and every odd element still gets the answer it got
through the generic machinery."""

import random

from twisted.internet import defer
from twisted.trial import unittest
from twisted.words.xish import domish
from twisted.words.xish.utility import EventDispatcher

from tests.server_helpers import DOMAIN, AliceAndBobOnline, quiet_server_stream
from xep207.hooks import STANZA, Hooks
from xep207.server.element_dispatch import FastElementDispatch

NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams"

QUERIES = ["/*", "/message", "/iq", "/presence", "/message[@type='chat']", "/iq[@type='set']/query",
           "/message/body", "/iq/query[@xmlns='jabber:iq:roster']", "//body", "//event/never",
           "/message[@to='bob@localhost']", "/error[@xmlns='http://etherx.jabber.org/streams']"]


def _elements():
    found = []
    for name in ("message", "iq", "presence", "error", "r"):
        for kind in (None, "chat", "set", "get"):
            element = domish.Element(("jabber:client", name))
            if kind:
                element["type"] = kind
            if name == "message":
                element.addElement("body", content="hi")
                element["to"] = "bob@localhost"
            if name == "iq":
                element.addElement(("jabber:iq:roster", "query"))
            found.append(element)
    return found


class SameAsXishDispatch(unittest.TestCase):
    """``FastElementDispatch.dispatch`` calls what ``EventDispatcher.dispatch``
    calls, in the same order, for any set of observers."""

    def observe(self, dispatcher, log, plan):
        for index, (query, priority, onetime, extra) in enumerate(plan):
            def observer(*args, index=index, **kwargs):
                *given, element = args  # what addObserver was given comes first
                log.append((index, element.name, element.getAttribute("type"), given,
                            tuple(sorted(kwargs.items()))))
            add = dispatcher.addOnetimeObserver if onetime else dispatcher.addObserver
            if extra:
                add(query, observer, priority, "positional", key=index)
            else:
                add(query, observer, priority)

    def test_random_observer_sets_are_called_alike(self):
        rng = random.Random(207)
        for _ in range(200):
            plan = [(rng.choice(QUERIES), rng.choice((-1, 0, 0, 1, 5)), rng.random() < 0.2, rng.random() < 0.3)
                    for _ in range(rng.randint(0, 6))]
            elements = [rng.choice(_elements()) for _ in range(8)]
            slow, fast, slow_log, fast_log = EventDispatcher(), FastElementDispatch(), [], []
            self.observe(slow, slow_log, plan)
            self.observe(fast, fast_log, plan)
            for element in elements:
                self.assertEqual(fast.dispatch(element), slow.dispatch(element))
            self.assertEqual(fast_log, slow_log, plan)
            named = domish.Element((None, "named"))  # a named event: the observers of that name
            self.assertEqual(fast.dispatch(named, "//event/never"), slow.dispatch(named, "//event/never"))
            self.assertEqual(fast_log, slow_log, plan)

    def test_a_pipe_end_made_faster_keeps_its_observers(self):
        from wokkel.generic import XmlPipe

        from xep207.server.element_dispatch import faster

        pipe, seen = XmlPipe(), []
        pipe.sink.addObserver("/iq[@type='get']/query", lambda e: seen.append(("query", e["id"])))
        pipe.sink.addObserver("//event/custom", lambda data: seen.append(("event", data)))
        faster(pipe.sink)
        self.assertIsInstance(pipe.sink, FastElementDispatch)
        iq = domish.Element((None, "iq"))
        iq["type"], iq["id"] = "get", "1"
        iq.addElement(("jabber:iq:version", "query"))
        pipe.source.send(iq)
        iq["type"] = "set"
        pipe.source.send(iq)
        pipe.sink.dispatch("data", "//event/custom")
        self.assertEqual(seen, [("query", "1"), ("event", "data")])
        self.assertEqual(list(pipe.sink._plans), ["iq"])

    def test_made_up_names_do_not_grow_the_plans(self):
        from xep207.server.element_dispatch import MAX_PLANS

        fast = FastElementDispatch()
        fast.addObserver("/*", lambda e: None)
        for i in range(100):
            fast.dispatch_element(domish.Element((None, f"name{i}")))
        self.assertLessEqual(len(fast._plans), MAX_PLANS)

    def test_a_failing_observer_is_logged_and_the_others_still_run(self):
        fast, seen = FastElementDispatch(), []
        fast.addObserver("/*", lambda e: 1 / 0, 1)
        fast.addObserver("/*", seen.append)
        element = domish.Element((None, "message"))
        fast.dispatch_element(element)
        self.assertEqual(seen, [element])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_observers_changed_during_a_dispatch_count_from_the_next(self):
        fast, seen = FastElementDispatch(), []

        def late(element):
            seen.append(("late", element.name))

        def first(element):
            seen.append(("first", element.name))
            fast.addObserver("/message", late)
            fast.removeObserver("/*", second)

        def second(element):
            seen.append(("second", element.name))

        fast.addObserver("/*", first, 1)
        fast.addObserver("/*", second)
        fast.dispatch_element(domish.Element((None, "message")))
        self.assertEqual(seen, [("first", "message"), ("second", "message")])  # removed after, not during
        del seen[:]
        fast.removeObserver("/*", first)
        fast.dispatch_element(domish.Element((None, "message")))
        self.assertEqual(seen, [("late", "message")])

    def test_a_query_is_evaluated_after_the_observers_before_it(self):
        fast, seen = FastElementDispatch(), []
        fast.addObserver("/*", lambda e: e.__setitem__("type", "chat"), 1)
        fast.addObserver("/message[@type='chat']", seen.append)
        element = domish.Element((None, "message"))
        fast.dispatch_element(element)
        self.assertEqual(seen, [element])

    def test_a_onetime_observer_fires_once_and_the_plan_follows(self):
        fast, once, always = FastElementDispatch(), [], []
        fast.addOnetimeObserver("/message", once.append)
        fast.addObserver("/*", always.append)
        for _ in range(3):
            fast.dispatch_element(domish.Element((None, "message")))
        self.assertEqual((len(once), len(always)), (1, 3))
        self.assertEqual(fast._xpathObservers[0].get(next(iter(fast._xpathObservers[0]))).callbacks.keys(),
                         {always.append})


class StanzaFilteredHooks(unittest.TestCase):
    def stanza(self, name):
        return domish.Element((None, name))

    def test_a_handler_sees_only_the_stanzas_it_asked_for_in_priority_order(self):
        hooks, seen = Hooks(), []
        hooks.add(STANZA, lambda s: seen.append(("all", s.name)), priority=10)
        hooks.add(STANZA, lambda s: seen.append(("presence", s.name)), priority=5, stanzas=("presence",))
        hooks.add(STANZA, lambda s: seen.append(("message", s.name)) or "taken", stanzas=("message",))
        hooks.add(STANZA, lambda s: seen.append(("last", s.name)), priority=-1)
        self.assertEqual(hooks.first_now(STANZA, self.stanza("message")), "taken")
        self.assertIsNone(hooks.first_now(STANZA, self.stanza("presence")))
        self.assertIsNone(hooks.first_now(STANZA, self.stanza("iq")))
        self.assertEqual(seen, [("all", "message"), ("message", "message"),
                                ("all", "presence"), ("presence", "presence"), ("last", "presence"),
                                ("all", "iq"), ("last", "iq")])

    def test_adding_and_removing_after_use_is_seen(self):
        hooks, seen = Hooks(), []

        def presence_only(s):
            seen.append(s.name)

        hooks.add(STANZA, presence_only, stanzas=("presence",))
        hooks.first_now(STANZA, self.stanza("presence"))
        hooks.add(STANZA, lambda s: "taken", priority=1, stanzas=("presence",))
        self.assertEqual(hooks.first_now(STANZA, self.stanza("presence")), "taken")
        hooks.remove(STANZA, presence_only)
        hooks.first_now(STANZA, self.stanza("message"))
        self.assertEqual(seen, ["presence"])
        # (the removed handler's filter went with it; the one left keeps its own)
        self.assertEqual(list(hooks._wants.values()), [frozenset({"presence"})])
        self.assertEqual(hooks.first_now(STANZA, self.stanza("presence")), "taken")
        self.assertIsNone(hooks.first_now(STANZA, self.stanza("message")))

    def test_a_made_up_name_is_filtered_but_not_remembered(self):
        hooks, seen = Hooks(), []
        hooks.add(STANZA, lambda s: seen.append(s.name), stanzas=("message",))
        hooks.add(STANZA, lambda s: seen.append("any"))
        for i in range(3):
            hooks.first_now(STANZA, self.stanza(f"made-up-{i}"))
        self.assertEqual(seen, ["any"] * 3)
        self.assertEqual(hooks._by_stanza[STANZA], {})

    def test_the_handlers_after_a_deferred_pass_keep_the_filter(self):
        hooks, pending, seen = Hooks(), defer.Deferred(), []
        hooks.add(STANZA, lambda s: pending, priority=1)
        hooks.add(STANZA, lambda s: seen.append("presence") or "wrong", stanzas=("presence",))
        hooks.add(STANZA, lambda s: seen.append("message") or "right", stanzas=("message",))
        answer = hooks.first_now(STANZA, self.stanza("message"))
        pending.callback(None)
        self.assertEqual(self.successResultOf(answer), "right")
        self.assertEqual(seen, ["message"])

    def test_events_without_filters_and_other_arguments_are_untouched(self):
        hooks = Hooks()
        hooks.add("e", lambda *args: args or None)
        self.assertEqual(hooks.first_now("e", 1, 2), (1, 2))
        self.assertIsNone(hooks.first_now("e"))


class ClientStreamElements(AliceAndBobOnline):
    """Odd elements on a bound stream get what they got through xish's dispatch."""

    async def assert_stream_error(self, client, condition, text):
        data = (await client.closed).decode("utf-8", "replace")
        self.assertIn(f"<{condition} xmlns='{NS_STREAMS_ERROR}'/>", data)
        self.assertIn(text, data)
        self.assertTrue(data.endswith("</stream:stream>"))

    async def test_a_child_named_handled_or_session_does_not_hide_a_message(self):
        # domish answers getattr(element, "handled") with such a child: the
        # message used to be dropped without a word.
        for marker in ("handled", "session"):
            self.alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='{marker}'><{marker}/><body>x</body>"
                            "</message>")
            got = await self.bob.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == marker)
            self.assertEqual(got["from"], f"alice@{DOMAIN}/raw")
            self.assertEqual([c.name for c in got.elements()][:2], [marker, "body"])

    async def test_a_prefixed_stanza_reaches_everyone_well_formed(self):
        # RFC 6120 lets a client write <c:message xmlns:c='jabber:client'>.
        # The stanza used to be passed on with its prefix, and text code
        # closing it as </message> sent (and stored) malformed XML.
        prefixed = (f"<c:message xmlns:c='jabber:client' to='{{to}}' type='chat' id='{{id}}'><c:body>hi</c:body>"
                    "<e:x xmlns:e='urn:example:e' e:a='1'><e:y/></e:x><c:thread>t</c:thread></c:message>")

        def check(got):
            self.assertEqual(str(got.body), "hi")
            self.assertEqual(str(got.thread), "t")
            x = next(c for c in got.elements() if c.name == "x")
            self.assertEqual((x.uri, [c.name for c in x.elements()], x.getAttribute(("urn:example:e", "a"))),
                             ("urn:example:e", ["y"], "1"))

        self.alice.send(prefixed.format(to=f"bob@{DOMAIN}", id="online"))
        check(await self.bob.wait_for(lambda e: e.getAttribute("id") == "online"))
        self.alice.send(prefixed.format(to=f"carol@{DOMAIN}", id="offline"))
        self.alice.send(f"<iq type='get' id='after' to='carol@{DOMAIN}'/>")  # ordered after the message
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "after")
        carol = await self.connect()
        await carol.login("carol")
        carol.send("<presence/>")
        stored = await carol.wait_for(lambda e: e.getAttribute("id") == "offline")
        check(stored)
        self.assertIsNotNone(stored.delay)
        # every stream still parses: nothing after the stanzas broke them
        for client in (self.alice, self.bob, carol):
            client.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
            await client.wait_for(lambda e: e.getAttribute("id") == "ping")
            self.assertNotIn(b"c:message", client.received)

    async def test_a_non_stanza_in_jabber_client_is_unsupported_stanza_type(self):
        self.alice.send("<r xmlns='jabber:client'/>")
        await self.assert_stream_error(self.alice, "unsupported-stanza-type", "&lt;r/&gt; is not a stanza")

    async def test_a_stanza_name_in_an_extension_namespace_goes_to_that_extension(self):
        self.alice.send("<message xmlns='urn:xmpp:sm:3'/>")
        await self.assert_stream_error(self.alice, "unsupported-stanza-type", "&lt;message/&gt; is not XEP-0198")
        self.bob.send("<iq type='get' id='p' xmlns='urn:xmpp:csi:0'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.assert_stream_error(self.bob, "unsupported-stanza-type", "&lt;iq/&gt; is not XEP-0352")

    async def test_a_stanza_in_another_namespace_is_unsupported_stanza_type(self):
        self.alice.send(f"<message xmlns='jabber:server' to='bob@{DOMAIN}' from='bob@{DOMAIN}'><body>x</body>"
                        "</message>")
        await self.assert_stream_error(self.alice, "unsupported-stanza-type",
                                       "&lt;message/&gt; in jabber:server is not a jabber:client stanza")
        self.bob.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "ping")
        self.assertEqual(self.bob.unconsumed("message"), [])

    async def test_a_stream_error_from_the_client_is_answered_as_before(self):
        self.alice.send("<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
        await self.assert_stream_error(self.alice, "unsupported-stanza-type",
                                       "&lt;error/&gt; in http://etherx.jabber.org/streams is not")

    async def test_stream_management_still_counts_each_stanza(self):
        self.alice.send("<enable xmlns='urn:xmpp:sm:3'/>")
        await self.alice.expect("<enabled")
        for i in range(3):
            self.alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m{i}'><body>{i}</body></message>")
        self.alice.send("<presence/><r xmlns='urn:xmpp:sm:3'/>")
        await self.alice.expect("<a xmlns='urn:xmpp:sm:3' h='4'/>")

    async def test_an_observer_added_to_a_live_stream_sees_stanzas_first(self):
        stream = self.server.router.sessions[f"alice@{DOMAIN}"]["raw"].stream
        seen, once = [], []

        def take(element):
            seen.append(element.getAttribute("id"))
            element.handled = True  # the client stream's mark: not routed

        stream.addObserver("/message[@type='headline']", take, priority=1)
        stream.addOnetimeObserver("/message/body", lambda e: once.append(e.getAttribute("id")), priority=2)
        self.alice.send(f"<message to='bob@{DOMAIN}' type='headline' id='h'><body>x</body></message>")
        self.alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='c1'><body>x</body></message>")
        self.alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='c2'><body>x</body></message>")
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "c2")
        self.assertEqual((seen, once), (["h"], ["h"]))
        self.assertEqual([e.getAttribute("id") for e in self.bob.unconsumed("message")], ["c1"])


class StorageTimings(unittest.TestCase):
    """``metrics.STORAGE_SECONDS`` is plain numbers, exposed exactly as the
    prometheus ``Histogram`` it replaced would expose them."""

    def test_the_exposition_is_a_histograms(self):
        from prometheus_client import CollectorRegistry, Histogram, generate_latest

        from xep207.metrics import _Timings

        buckets = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
        reference_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
        reference = Histogram("xep207_storage_operation_seconds",
                              "Time from a storage call to its answer (queueing included).", ["operation"],
                              buckets=buckets, registry=reference_registry)
        ours = _Timings(buckets)
        ours_registry.register(ours)
        rng = random.Random(13)
        values = [0.0005, 0.001, 10, 10.5, 0] + [rng.expovariate(100) for _ in range(200)]
        for operation in ("publish", "get_account", "idle"):
            reference.labels(operation)
            counts = ours.labels(operation)
            if operation == "idle":
                continue  # made, never observed: zero everywhere, as a Histogram's child
            for seconds in values:
                reference.labels(operation).observe(seconds)
                ours.observe(counts, seconds)

        def lines(registry):
            text = generate_latest(registry).decode()
            # _created: when each child was made, a moment apart
            return [line.rsplit(" ", 1)[0] if "_created{" in line else line for line in text.splitlines()]

        self.assertEqual(lines(ours_registry), lines(reference_registry))
        # a bound is inclusive (0.0005 counts in le="0.0005"); above the last, the +Inf bucket
        self.assertEqual(ours.counts["publish"][0], sum(1 for v in values if v <= 0.0005))
        self.assertEqual(ours.counts["publish"][-2], 1)


HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
TRICKY = [
    "<message to='bob@localhost' type='chat' id='1'><body>hi &amp; th\u00e9re &#x1F600;</body></message>",
    "<message xml:lang='fr' to='b' xmlns:a='urn:a' a:one='1' two='2' a:three='3'><body>x</body>"
    "<thread parent='p'>t</thread></message>",
    "<iq type='set' id='2'><query xmlns='jabber:iq:roster'><item jid='x@y' name='&lt;&gt;'>"
    "<group>G</group></item></query></iq>",
    "<p:message xmlns:p='jabber:client' to='c'><p:body>prefixed</p:body><q:x xmlns:q='urn:q'><q:y/></q:x>"
    "</p:message>",
    "<presence><x xmlns='urn:outer'><y xmlns=''>empty default</y><z/></x>text between<![CDATA[<raw>]]>"
    "and after</presence>",
    "<message><body>\n  spaced\t\r\n text  </body><body/><html xmlns='http://jabber.org/protocol/xhtml-im'>"
    "<body xmlns='http://www.w3.org/1999/xhtml'><p>a<b>b</b>c</p></body></html></message>",
]


PREFIXED = 3


def _tree(element):
    if isinstance(element, str):
        return element
    return (element.uri, element.name, element.defaultUri, list(element.attributes.items()),
            [_tree(c) for c in element.children])


class TheParser(unittest.TestCase):
    """``ServerStream``'s own expat handlers build what domish's would."""

    def parse_both(self, chunks):
        from twisted.internet.testing import StringTransport

        ours, reference = [], []
        stream = quiet_server_stream()
        stream.onElement = ours.append
        stream.makeConnection(StringTransport())
        stream.authenticated = True
        expat = domish.elementStream()
        expat.DocumentStartEvent = lambda root: None
        expat.ElementEvent = reference.append
        for chunk in chunks:
            stream.dataReceived(chunk)
            expat.parse(chunk)
        stream.connectionLost(None)
        return ours, reference

    def test_a_quiet_stream_drops_its_dispatch_plans_with_its_parser(self):
        from twisted.internet import task
        from twisted.internet.testing import StringTransport

        from xep207.server import idle_parser

        clock, seen = task.Clock(), []
        stream = quiet_server_stream(clock=clock)
        stream.addObserver("/message", seen.append)
        stream.makeConnection(StringTransport())
        stream.dataReceived(HEADER + TRICKY[0].encode())
        self.assertEqual(list(stream._plans), ["message"])
        clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(stream.stream.parser)
        self.assertIsNone(stream._plans)
        stream.dataReceived(TRICKY[0].encode())
        self.assertEqual(len(seen), 2)

    def test_the_same_elements_whole_and_byte_by_byte(self):
        data = HEADER + "".join(TRICKY).encode("utf-8")
        for chunks in ([data], [data[i:i + 1] for i in range(len(data))], [data[i:i + 7] for i in range(0, len(data), 7)]):
            ours, reference = self.parse_both(chunks)
            self.assertEqual(len(ours), len(TRICKY))
            # Prefixes are where ours differs on purpose: dropped (the
            # prefixed stanza TRICKY[3] reads as an unprefixed one).
            same = [i for i in range(len(TRICKY)) if i != PREFIXED]
            self.assertEqual([_tree(ours[i]) for i in same], [_tree(reference[i]) for i in same])
            unprefixed = [i for i in same if "xmlns:" not in TRICKY[i]]
            self.assertEqual([ours[i].toXml() for i in unprefixed], [reference[i].toXml() for i in unprefixed])
            self.assertEqual([dict(e.localPrefixes) for e in ours], [{}] * len(TRICKY))
            self.assertEqual(ours[PREFIXED].toXml(), "<message xmlns='jabber:client' to='c'><body>prefixed</body>"
                                                     "<x xmlns='urn:q'><y/></x></message>")
            self.assertEqual(_tree(ours[PREFIXED])[:3], ("jabber:client", "message", "jabber:client"))
        self.assertEqual(ours[1].attributes[("http://www.w3.org/XML/1998/namespace", "lang")], "fr")
        self.assertEqual(str(ours[0].body), "hi & th\u00e9re \U0001F600")


class ResourceChoice(unittest.TestCase):
    """The router's choice of sessions (RFC 6121 §8.5), written as loops for
    speed, answers as the comprehensions it replaced, on random accounts."""

    def reference(self, router, bare, everyone=False):
        available = [s for s in router.sessions.get(bare, {}).values() if s.available]
        candidates = [s for s in available if s.priority >= 0]
        if everyone or router.deliver_to_all or not candidates:
            return available, candidates
        top = max(s.priority for s in candidates)
        return available, [s for s in candidates if s.priority == top]

    def test_random_accounts(self):
        from xep207.jids import parse_jid
        from xep207.server.c2s import Session
        from xep207.server.router import Router

        rng = random.Random(6121)
        for _ in range(300):
            router = Router("localhost", storage=None)
            router.deliver_to_all = rng.random() < 0.2
            for i in range(rng.randint(0, 5)):
                session = Session(parse_jid(f"alice@localhost/r{i}"), stream=None,
                                  available=rng.random() < 0.7, priority=rng.choice((-5, -1, 0, 0, 1, 5, 5, 127)))
                router.sessions["alice@localhost"][f"r{i}"] = session
            for everyone in (False, True):
                available, deliverable = self.reference(router, "alice@localhost", everyone)
                self.assertEqual(router.available_resources("alice@localhost"), available)
                self.assertEqual(router.deliverable_resources("alice@localhost", everyone), deliverable)
            self.assertEqual(router.sessions_for("alice@localhost"), available)
            for i in range(6):
                found = router.sessions["alice@localhost"].get(f"r{i}")
                self.assertEqual(router.sessions_for(f"alice@localhost/r{i}"), [found] if found else [])
        for elsewhere in ("alice@example.org", "localhost", "alice@localhost.evil/r0", "a@b@localhost"):
            self.assertIsNone(router.sessions_for(elsewhere), elsewhere)
        self.assertEqual(router.available_resources("nobody@localhost"), [])
        self.assertNotIn("nobody@localhost", router.sessions)  # asking made no entry
