"""The two shims wokkel 18.0.0 needs on current Twisted.

wokkel was last released in 2018. It imports ``twisted.python.compat._PY3``
(removed with Python 2 support) and ``twisted.python.constants`` (moved out of
Twisted into the ``constantly`` package). Both are restored here, once, before
anything imports wokkel; ``xep207/__init__.py`` imports this module first.
Nothing else of wokkel or Twisted is patched.
"""

import sys

import constantly
import twisted.python.compat

if not hasattr(twisted.python.compat, "_PY3"):
    setattr(twisted.python.compat, "_PY3", True)  # an attribute Twisted no longer declares

sys.modules.setdefault("twisted.python.constants", constantly)
