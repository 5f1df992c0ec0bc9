"""Options from a TOML file, under the command line (which wins).

The file's keys are the long option names: ``domain = "example.org"``,
``c2s-port = 5222``, ``allow-plaintext-auth = true``, and a ``[components]``
table of component JIDs to secrets. Relative paths (``data-dir``, ``tls-cert``,
``tls-key``) are relative to the file's directory, so ``twistd`` and
``xep207ctl`` find the same data from wherever they are run.
"""

from __future__ import annotations

import os
import tomllib

from twisted.python import usage


def _find_config(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg in ("component",):  # a subcommand: its options are its own
            return None
    return None


PATHS = ("data-dir", "tls-cert", "tls-key")  # file settings resolved against the config file's directory


class ConfigFileOptions(usage.Options):
    """``usage.Options`` that first reads ``--config FILE``; tables become dicts."""

    tables: tuple[str, ...] = ()

    def parseOptions(self, options=None):
        import sys

        argv = list(sys.argv[1:] if options is None else options)
        path = _find_config(argv)
        if path:
            self.apply_config(path)
        super().parseOptions(argv)

    def apply_config(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise usage.UsageError(f"--config: {exc}")
        except tomllib.TOMLDecodeError as exc:
            raise usage.UsageError(f"--config {path}: not valid TOML ({exc})")
        base = os.path.dirname(os.path.abspath(path))
        flags = {name for name, *_ in getattr(self, "optFlags", [])}
        parameters = {row[0]: row for row in getattr(self, "optParameters", [])}
        for key, value in data.items():
            if key in self.tables:
                if not isinstance(value, dict):
                    raise usage.UsageError(f"--config {path}: {key} must be a table")
                self[key] = {str(k): [str(i) for i in v] if isinstance(v, list) else str(v)
                             for k, v in value.items()}
            elif key in ("plugins", "admins") and key in self:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise usage.UsageError(f"--config {path}: {key} is a list of strings")
                self[key] = list(value)
            elif key in flags:
                if not isinstance(value, bool):
                    raise usage.UsageError(f"--config {path}: {key} must be true or false")
                self[key] = value
            elif key in parameters:
                coerce = parameters[key][4] if len(parameters[key]) > 4 else None
                try:
                    self[key] = coerce(value) if coerce else str(value)
                except (TypeError, ValueError) as exc:
                    raise usage.UsageError(f"--config {path}: {key}: {exc}")
                if key in PATHS:
                    # Relative to the file, so the server and xep207ctl agree from any directory.
                    self[key] = os.path.join(base, os.path.expanduser(self[key]))
            else:
                raise usage.UsageError(f"--config {path}: unknown setting {key!r}")
