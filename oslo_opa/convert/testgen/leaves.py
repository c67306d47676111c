"""The check tree's node kinds, and its leaves as the solver sees them."""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert.syntax import Format, parse_format, try_literal

AND, OR, NOT = _checks.AndCheck, _checks.OrCheck, _checks.NotCheck


@dataclasses.dataclass
class Leaf:
    """A check the solver decides: role, credential path, literal."""

    kind: str  # 'role', 'path', 'literal' or 'raise'
    fmt: Format
    path: tuple[str, ...] = ()
    value: str | None = None


def leaf_of(check: _checks.BaseCheck) -> tuple[Any, Leaf | bool]:
    """The leaf's identity and what it is (True/False: a constant).

    Two checks with one identity always have the same outcome, so the
    solver gives them one truth value.
    """
    if type(check) is _checks.RoleCheck:
        fmt = parse_format(check.match)
        if fmt.unsupported is not None:
            return ('raise', str(check)), Leaf('raise', fmt)
        key = fmt.static.lower() if fmt.static is not None else check.match
        return ('role', key), Leaf('role', fmt)
    if type(check) is _checks.GenericCheck:
        fmt = parse_format(check.match)
        ok, value = try_literal(check.kind)
        if not ok or fmt.unsupported is not None:
            return ('raise', str(check)), Leaf('raise', fmt)
        if value is not None and fmt.static is not None:
            return None, fmt.static == value
        ident = ('generic', check.kind, check.match)
        if value is not None:
            return ident, Leaf('literal', fmt, value=value)
        return ident, Leaf('path', fmt, path=tuple(check.kind.split('.')))
    # compile.py refuses every other class.
    return ('raise', str(check)), Leaf('raise', Format([]))
