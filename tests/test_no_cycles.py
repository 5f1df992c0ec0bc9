"""Stanzas the hot paths are done with are freed by reference counting, not
left as cycles for the garbage collector (issue 13: on one-to-one chat its
passes cost 25-50 µs a message). With the collector off, a weak reference
dies the moment the last strong one goes only if nothing is left in a cycle."""

import gc
import weakref

from twisted.trial import unittest
from twisted.words.xish import domish

from xep207.xmlutil import parse_stanza, release

MESSAGE = ("<message to='b@x' type='chat'><body>hi</body><html xmlns='http://jabber.org/protocol/xhtml-im'>"
           "<body xmlns='http://www.w3.org/1999/xhtml'><p>hi <b>there</b></p></body></html></message>")


class WithoutTheCollector(unittest.TestCase):
    def setUp(self):
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    def test_a_released_stanza_goes_with_its_last_reference(self):
        stanza = parse_stanza(MESSAGE)
        deepest = stanza.children[1].children[0].children[0].children[1]  # <b>
        self.assertEqual(deepest.name, "b")
        watched = [weakref.ref(stanza), weakref.ref(deepest)]
        release(stanza)
        self.assertIsNone(deepest.parent)
        del stanza, deepest
        self.assertEqual([w() for w in watched], [None, None])

    def test_without_release_it_would_wait_for_the_collector(self):
        stanza = parse_stanza(MESSAGE)
        watched = weakref.ref(stanza)
        del stanza
        self.assertIsNotNone(watched())  # (child-to-parent links: a cycle)
        gc.collect()
        self.assertIsNone(watched())

    def test_parse_stanza_leaves_no_parser_or_wrapper_behind(self):
        parsed = parse_stanza("<presence/>")  # no children: only the parser and the wrapper could hold it
        self.assertIsNone(parsed.parent)
        watched = weakref.ref(parsed)
        del parsed
        self.assertIsNone(watched())

    def test_release_keeps_the_tree_and_text(self):
        stanza = parse_stanza(MESSAGE)
        before = stanza.toXml()
        release(stanza)
        self.assertEqual(stanza.toXml(), before)
        built = domish.Element((None, "message"))
        built.addElement("body", content="x")
        release(built)
        self.assertEqual(built.toXml(), "<message><body>x</body></message>")
