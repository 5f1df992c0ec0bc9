"""xep207: an XMPP server whose every semantic is XEP-0060 publish-subscribe."""

from xep207 import _wokkel_compat  # noqa: F401  (must precede any wokkel import)

__version__ = "0.1.0"
