"""Registers ``twistd xep207`` (an ``IServiceMaker``; the work is in ``xep207.tap``)."""

from twisted.application.service import ServiceMaker

xep207 = ServiceMaker(
    "xep207",
    "xep207.tap",
    "An XMPP server (or pubsub component) where every semantic is XEP-0060 pubsub",
    "xep207",
)
