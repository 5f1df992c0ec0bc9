"""xep207's own tests: a package, so that pytest, ``trial tests`` and
``python -m twisted.trial tests`` import every module once, by the same name."""
