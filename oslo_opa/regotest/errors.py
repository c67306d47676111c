"""The error raised when the tests cannot be run at all."""

from __future__ import annotations

from oslo_opa.errors import OsloOpaError


class RegoTestError(OsloOpaError):
    """The tests cannot be run (opa test's exit 1): a path that does not
    exist, a file that cannot be read or loaded, Rego that does not
    compile, a ``run`` that is not a regular expression."""
