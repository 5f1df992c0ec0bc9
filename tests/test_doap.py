"""The README's table of specifications and ``xep207.doap`` (what the XMPP
software list reads) name the same XEPs with the same status."""

import os
import re
import xml.etree.ElementTree as ET

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XMPP = "{https://linkmauve.fr/ns/xmpp-doap#}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def readme_table() -> dict[str, str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        rows = re.findall(r"^\| XEP-(\d{4}) [^|]*\| (\w+) \|", f.read(), re.M)
    return dict(rows)


def doap() -> dict[str, str]:
    tree = ET.parse(os.path.join(ROOT, "xep207.doap"))
    found = {}
    for xep in tree.iter(f"{XMPP}SupportedXep"):
        url = xep.find(f"{XMPP}xep").get(f"{RDF}resource")
        number = re.search(r"xep-(\d{4})\.html$", url).group(1)
        found[number] = xep.findtext(f"{XMPP}status")
    return found


class SpecificationList(unittest.TestCase):
    def test_readme_and_doap_agree(self):
        table = readme_table()
        self.assertGreater(len(table), 30)
        self.assertEqual(doap(), table)

    def test_statuses_are_the_doap_vocabulary(self):
        self.assertLessEqual(set(doap().values()), {"complete", "partial", "planned", "deprecated", "removed"})
