"""xep207.jids: the cached, fast-path JID preparation gives exactly what Twisted's
stringprep'd ``jid.JID`` gives, and RFC 7622's answer where Twisted is laxer."""

from twisted.trial import unittest
from twisted.words.protocols.jabber import jid as twisted_jid

from xep207 import jids
from xep207.jids import InvalidFormat, bare_jid, full_jid, jid_from_parts, parse_jid

# Inputs on which Twisted and RFC 7622 agree: valid ones (some changed by
# preparation) and invalid ones. Each goes through the fast path or the
# fallback, and both must match Twisted.
AGREED = [
    # plain ASCII, case folding of local and domain parts, resource kept as is
    "user@example.com", "User@Example.COM/Res", "example.com", "example.com/Some Resource",
    "a@b/c/d@e", "host/res@with/slashes", "u@xn--bcher-kva.example", "u@127.0.0.1", "u@a-b.c-d",
    "MiXeD.CaSe.Host", "u@h/ leading and trailing spaces ", "u@h/Ünïcödé Résource",
    # Unicode: case folding (B.2), width mapping and compatibility forms (NFKC)
    "ÄÖÜ@Bücher.example", "Σίσυφος@example.com", "ＵＳＥＲ@ｅｘａｍｐｌｅ.ｃｏｍ/ＲＥＳ",
    "u@example.com/ﬁ ligature", "Straße@example.com", "u\u00ad@example.com", "user@exa\u200bmple.com",
    "ǅ@example.com", "u@example\u3002com", "u@example\uff0ecom",
    # prohibited characters in each part
    "us er@example.com", "us\"er@example.com", "us&er@example.com", "us'er@example.com",
    "us:er@example.com", "us<er@example.com", "us>er@example.com", "u\x07@example.com",
    "u@exa mple.com", "u@exa_mple.com", "u@-example.com", "u@example-.com", "u@exam!ple.com",
    "u@[::1]", "u@example.com/r\x00", "u@example.com/r\x7f", "u@example.com/r\u2028",
    "u\u3000@example.com", "u@example.com/\ue000private", "u\U000e0001@example.com",
    # bidi: all right-to-left is fine, mixed or RandAL not at both ends is not
    "\u05d0\u05d1@example.com", "\u05d0a\u05d1@example.com", "\u05d0\u05d1a@example.com",
    "u@example.com/\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "u@example.com/a\u0627",
    "\u0627\u0661@example.com", "\u0627 1@example.com",
    # unassigned code points (stringprep A.1)
    "u\u0221@example.com", "u@example.com/r\u0221",
    # no domainpart
    "@", "user@", "user@/res", "/res",
]


def twisted_answer(text):
    try:
        parsed = twisted_jid.JID(text)
    except (twisted_jid.InvalidFormat, IndexError):  # IndexError: Twisted on an empty domain label
        return "invalid"
    return (parsed.user, parsed.host, parsed.resource)


def our_answer(text):
    try:
        parsed = parse_jid(text)
    except InvalidFormat:
        return "invalid"
    return (parsed.user, parsed.host, parsed.resource)


class SameAsTwisted(unittest.TestCase):
    def test_agreed_cases_match_twisted(self):
        for text in AGREED:
            self.assertEqual(our_answer(text), twisted_answer(text), repr(text))

    def test_cache_hits_match_too(self):
        # The second call comes from the cache, valid and invalid alike.
        for text in AGREED:
            self.assertEqual(our_answer(text), twisted_answer(text), repr(text))

    def test_the_tricky_ones_are_what_rfc_7622_says(self):
        # A few of AGREED spelled out, so a regression in Twisted could not hide one here.
        self.assertEqual(parse_jid("User@Example.COM/Res").full(), "user@example.com/Res")
        self.assertEqual(parse_jid("ＵＳＥＲ@ｅｘａｍｐｌｅ.ｃｏｍ/ＲＥＳ").full(), "user@example.com/RES")
        self.assertEqual(parse_jid("Straße@example.com").user, "strasse")
        self.assertEqual(parse_jid("u@example.com/ﬁ ligature").resource, "fi ligature")
        self.assertEqual(parse_jid("u\u00ad@example.com").user, "u")  # mapped to nothing
        self.assertEqual(parse_jid("u@example\u3002com").host, "example.com")
        self.assertEqual(parse_jid("a@b/c/d@e").resource, "c/d@e")
        self.assertEqual(parse_jid("host/res@with/slashes").full(), "host/res@with/slashes")
        for bad in ("us er@example.com", "u@exa_mple.com", "u@example.com/r\x00", "\u05d0a\u05d1@example.com",
                    "u@example.com/a\u0627", "u\u0221@example.com", "u@[::1]", "u@-example.com"):
            self.assertRaises(InvalidFormat, parse_jid, bad)

    def test_result_is_a_twisted_jid_equal_to_twisted(self):
        parsed = parse_jid("Juliet@Capulet.example/Balcony")
        self.assertIsInstance(parsed, twisted_jid.JID)
        self.assertEqual(parsed, twisted_jid.JID("juliet@capulet.example/Balcony"))
        self.assertEqual(hash(parsed), hash(twisted_jid.JID("juliet@capulet.example/Balcony")))
        self.assertEqual(parsed.userhostJID(), twisted_jid.JID("juliet@capulet.example"))

    def test_helpers(self):
        self.assertEqual(bare_jid("Juliet@Capulet.example/Balcony"), "juliet@capulet.example")
        self.assertEqual(full_jid("Juliet@Capulet.example/Balcony"), "juliet@capulet.example/Balcony")
        self.assertEqual(bare_jid("Capulet.example/x"), "capulet.example")
        self.assertRaises(InvalidFormat, bare_jid, "a b@c")

    def test_from_parts_matches_twisted_tuple(self):
        for parts in [("Juliet", "Capulet.EXAMPLE", "Balcony"), ("ÄÖ", "ｅｘａｍｐｌｅ.com", None),
                      (None, "example.com", "r"), ("a", "example.com", "ﬁ")]:
            self.assertEqual(jid_from_parts(*parts), twisted_jid.JID(tuple=parts), parts)
        self.assertRaises(InvalidFormat, jid_from_parts, "a b", "example.com")
        self.assertRaises(InvalidFormat, jid_from_parts, "a", "example.com", "bad\x00")
        self.assertRaises(InvalidFormat, jid_from_parts, "a", "", None)


class StricterThanTwisted(unittest.TestCase):
    """Where Twisted accepts what RFC 7622 forbids (or crashes)."""

    def test_empty_parts_are_refused(self):
        # Twisted silently turns these into the domain alone.
        for text in ("@example.com", "@example.com/r", "u@example.com/", "example.com/", "\u00ad@example.com",
                     "u@example.com/\u00ad\u200b"):
            self.assertRaises(InvalidFormat, parse_jid, text)

    def test_part_lengths_up_to_1023_octets(self):
        self.assertEqual(parse_jid("a" * 1023 + "@example.com").user, "a" * 1023)
        self.assertEqual(parse_jid("u@example.com/" + "r" * 1023).resource, "r" * 1023)
        self.assertRaises(InvalidFormat, parse_jid, "a" * 1024 + "@example.com")
        self.assertRaises(InvalidFormat, parse_jid, "u@example.com/" + "r" * 1024)
        self.assertRaises(InvalidFormat, parse_jid, "u@" + ".".join(["a" * 60] * 17))  # 1036 octets
        # Octets, not characters: 341 three-octet characters fit, 342 do not.
        self.assertEqual(len(parse_jid("u@example.com/" + "€" * 341).resource), 341)
        self.assertRaises(InvalidFormat, parse_jid, "u@example.com/" + "€" * 342)
        self.assertRaises(InvalidFormat, parse_jid, "€" * 342 + "@example.com")

    def test_empty_domain_labels_are_invalid_not_a_crash(self):
        for text in ("",  # Twisted: RuntimeError
                     "u@a..b", "u@.", "u@.example.com", "u@example.com..", "u@example\u3002\u3002com"):
            self.assertRaises(InvalidFormat, parse_jid, text)

    def test_final_dot_of_the_domain_is_stripped(self):
        self.assertEqual(parse_jid("u@Example.com./r").full(), "u@example.com/r")
        self.assertEqual(parse_jid("u@example\u3002com\u3002").host, "example.com")
        self.assertEqual(parse_jid("example.com."), parse_jid("example.com"))


class Cache(unittest.TestCase):
    def test_bounded(self):
        info = jids._parse.cache_info()
        self.assertEqual(info.maxsize, jids.CACHE_SIZE)
        for i in range(jids.CACHE_SIZE + 10):
            parse_jid(f"user{i}@bounded.example")
        self.assertLessEqual(jids._parse.cache_info().currsize, jids.CACHE_SIZE)

    def test_invalid_strings_raise_every_time(self):
        for _ in range(3):
            with self.assertRaises(InvalidFormat) as caught:
                parse_jid("bad user@example.com")
            self.assertIsNone(caught.exception.__context__)


class EveryAsciiCharacter(unittest.TestCase):
    def test_in_every_part_as_twisted(self):
        # The fast path's tables are hand-written: check them against Twisted's for each ASCII character.
        for code in range(128):
            c = chr(code)
            for text in (f"a{c}b@example.com", f"{c}x@example.com", f"u@ex{c}ample.com", f"u@{c}x.com",
                         f"u@example.com/r{c}", f"u@example.com/{c}"):
                self.assertEqual(our_answer(text), twisted_answer(text), repr(text))
