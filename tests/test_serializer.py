"""xep207.serializer writes exactly what domish's toXml() writes, for every
element: its own pass for the usual shape, domish's for the rest."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.words.xish import domish

from xep207.serializer import NS_XML, serialized

STREAM = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          b"xmlns:x='urn:x'>")


def parsed(*stanzas: str) -> list[domish.Element]:
    found: list[domish.Element] = []
    parser = domish.elementStream()
    parser.DocumentStartEvent = lambda root: None
    parser.ElementEvent = found.append
    parser.DocumentEndEvent = lambda: None
    parser.parse(STREAM + "".join(stanzas).encode("utf-8"))
    return found


CORPUS = [
    "<message to='b@x/r' type='chat' id='1'><body>hello</body></message>",
    "<message to='b@x' xml:lang='de'><body xml:lang='en'>a &amp; b &lt;c&gt; 'q' \"d\"</body>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<message to='b@x' id='a&apos;b&quot;c&amp;'><body/><thread parent='p'>t</thread></message>",
    "<message to='b@x'><x:foo a='1'/><body>prefixed sibling</body></message>",
    "<message to='b@x'><foo xmlns='urn:a' x:attr='v'><bar xmlns='urn:b'><baz/></bar>mixed text</foo></message>",
    "<message to='b@x'><html xmlns='http://jabber.org/protocol/xhtml-im'>"
    "<body xmlns='http://www.w3.org/1999/xhtml'><p>one <b>two</b> three</p></body></html></message>",
    "<message to='b@x'><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='b@x'/><body>x</body></message>",
    "<iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>",
    "<presence><show>away</show><status>\u00e9t\u00e9 \U0001F600</status><priority>-1</priority></presence>",
]


class SameAsDomish(unittest.TestCase):
    def test_parsed_stanzas(self):
        for element in parsed(*CORPUS):
            self.assertEqual(serialized(element), element.toXml())

    def test_built_elements(self):
        plain = domish.Element((None, "message"))  # no namespace at all
        plain["to"] = "b@x"
        plain.addElement("body", content="hi")
        raw = domish.Element(("jabber:client", "message"))
        raw.addRawXml("<already xmlns='urn:r'>serialized &amp; kept</already>")
        raw.addContent("text & <more>")
        qualified = domish.Element(("jabber:client", "message"))
        qualified[(NS_XML, "lang")] = "fr"
        qualified[("urn:other", "attr")] = "v"  # domish declares a prefix: its own pass
        prefixed = domish.Element(("jabber:client", "message"), localPrefixes={"p": "urn:p"})
        prefixed.addElement(("urn:p", "child"))
        no_default = domish.Element(("urn:a", "outer"), defaultUri=None)
        no_default.addElement((None, "inner"))
        other_uri = domish.Element(("urn:a", "outer"), defaultUri="urn:b")
        class Text(str):
            """Text that is a ``str`` subclass but not ``SerializedXML``: escaped as text."""

        subclassed = domish.Element(("jabber:client", "message"))
        subclassed.addElement("body").children.append(Text("a & <b> 'c'"))
        subclassed.children.append(Text("plain"))
        for element in (plain, raw, qualified, prefixed, no_default, other_uri, subclassed):
            self.assertEqual(serialized(element), element.toXml())
        self.assertIn("<body>a &amp; &lt;b&gt; 'c'</body>plain</message>", serialized(subclassed))

    def test_unknown_child_is_left_to_domish(self):
        element = domish.Element(("jabber:client", "message"))
        element.children.append(42)  # (domish itself cannot write it: the same error from both)
        with self.assertRaises(AttributeError):
            element.toXml()
        with self.assertRaises(AttributeError):
            serialized(element)

    def test_without_leaves_out_direct_children(self):
        message = parsed(CORPUS[6])[0]
        drop = lambda c: isinstance(c, domish.Element) and c.name == "stanza-id"  # noqa: E731
        self.assertEqual(serialized(message, drop),
                         "<message xmlns='jabber:client' to='b@x'><body>x</body></message>")
        unusual = parsed("<message to='b@x'><x:foo/><stanza-id xmlns='urn:xmpp:sid:0' id='f'/></message>")[0]
        self.assertNotIn("stanza-id", serialized(unusual, drop))
        self.assertIn("foo", serialized(unusual, drop))

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
           st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
    def test_any_text_and_attribute(self, text, value):
        element = domish.Element(("jabber:client", "message"))
        element["id"] = value
        element[(NS_XML, "lang")] = value
        element.addElement("body", content=text)
        element.addElement(("urn:ext", "ext"))["v"] = value
        self.assertEqual(serialized(element), element.toXml())
