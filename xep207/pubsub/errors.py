"""XEP-0060 errors by name, so the engine reads like the XEP's error tables.

They are Twisted ``StanzaError``s (via wokkel), which carry no I/O: the XML
layer turns them into error responses.
"""

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel.pubsub import BadRequest, PubSubError, Unsupported

__all__ = ["StanzaError", "PubSubError", "BadRequest", "Unsupported"]


def item_not_found(text=None):
    return StanzaError("item-not-found", text=text)


def forbidden(text=None):
    return StanzaError("forbidden", text=text)


def not_authorized(pubsub_condition, text=None):
    return PubSubError("not-authorized", pubsub_condition, text=text)


def closed_node():
    return PubSubError("not-allowed", "closed-node")


def conflict(text=None):
    return StanzaError("conflict", text=text)


def not_acceptable(pubsub_condition=None, text=None):
    if pubsub_condition:
        return PubSubError("not-acceptable", pubsub_condition, text=text)
    return StanzaError("not-acceptable", text=text)


def bad_request(pubsub_condition=None, text=None):
    return BadRequest(pubsub_condition, text=text)


def precondition_not_met(text=None):
    return PubSubError("conflict", "precondition-not-met", text=text)


def not_subscribed(type=None):
    """``type``: XEP-0060 §6.2.3.2 says ``cancel`` for an unsubscribe
    (Twisted's default for the condition is RFC 3920's ``wait``)."""
    error = PubSubError("unexpected-request", "not-subscribed")
    if type is not None:
        error.type = type
    return error


def unsupported(feature, text=None):
    return Unsupported(feature, text=text)


NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


def blocked(text="you have blocked this JID"):
    """XEP-0191 §3.6: what a user hears when writing to someone she blocked."""
    return StanzaError("not-acceptable", text=text,
                       appCondition=domish.Element((NS_BLOCKING_ERRORS, "blocked")))
