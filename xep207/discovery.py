"""XEP-0030 answers, tidied once for every service of the server.

wokkel's ``DiscoHandler`` gathers what each handler on a stream says about an
entity. This one adds what XEP-0030 §3.1 requires of every entity (the
``disco#info`` feature itself) and drops what two handlers both said (a
feature listed twice is a malformed answer for XEP-0115 caps).
"""

from __future__ import annotations

from wokkel import disco

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

__all__ = ["DiscoHandler", "NS_DISCO_INFO"]


def _key(element) -> tuple:
    if isinstance(element, disco.DiscoFeature):
        return ("feature", str(element))
    if isinstance(element, disco.DiscoIdentity):
        return ("identity", element.category, element.type, element.name)
    return ("other", id(element))


class DiscoHandler(disco.DiscoHandler):
    def info(self, requestor, target, nodeIdentifier):
        return super().info(requestor, target, nodeIdentifier).addCallback(tidy)


def tidy(elements: list) -> list:
    """Each identity and feature once, and ``disco#info`` wherever an entity answered."""
    if not any(isinstance(e, disco.DiscoIdentity) for e in elements):
        return elements  # nobody here: no entity to describe
    answer, seen = [], set()
    for element in [*elements, disco.DiscoFeature(NS_DISCO_INFO)]:
        key = _key(element)
        if key not in seen:
            seen.add(key)
            answer.append(element)
    return answer
