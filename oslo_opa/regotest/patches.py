"""``with data.P as C`` as a variant of the modules and the data.

regopy 1.5.2 compiles ``with data.P as C`` into a copy of every rule the
expression reaches (minutes on a converted directory), and merges C with
the rules below P, which OPA replaces.  Where OPA's meaning of it is
plainly "the document at P is C", a split test's step (see split.py)
leaves the modifier out and runs in a *variant* of the modules and data:
the modules whose package is P or below it left out, C at P in the data
(the runner compiles each variant's tests apart).  That holds when P is
a ground reference below data; C a constant that is plain JSON once read
(no set, no string with an escape or a character JSON would escape:
regopy would read them otherwise); every rule at or below P is in a
module whose package is at or below P; no rule is at a proper prefix of
P (OPA refuses that ``with``); no module left out defines a function (a
call to it would not compile) or holds the test; and the data above P is
objects (:class:`Patches`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from oslo_opa.regotest.lexer import (
    _lex,
    _ref_parts,
    _string_value,
    _Tok,
)
from oslo_opa.regotest.modules import _Module

# Each (P, C as JSON text) a step's variant sets, sorted.
Patch = tuple[tuple[tuple[str, ...], str], ...]
# Whether ``with data.P as C`` may be honoured by a variant, given P.
Honour = Callable[[tuple[str, ...]], bool]


def data_patch(
    toks: list[_Tok],
    datas: list[tuple[int, int, int]],
    subst: dict[int, str],
    honour: Honour | None,
) -> Patch:
    """The (P, C as JSON) of every ``with data.P as C`` in datas, sorted,
    when each may be honoured by a variant and no two targets overlap;
    () when any may not (they all stay)."""
    if honour is None or not datas:
        return ()
    found: dict[tuple[str, ...], str] = {}
    for w, as_, stop in datas:
        parts, dynamic, after = _ref_parts(toks, w + 1, as_)
        if dynamic or after != as_ or len(parts) < 2:
            return ()
        if not toks[w + 1].is_('ident', 'data'):
            return ()
        if not all(_plain_string(tok, value) for value, tok in parts[1:]):
            return ()
        path = tuple(value for value, _ in parts[1:])
        if stop == as_ + 2 and as_ + 1 in subst:
            value = _plain_json(_lex(subst[as_ + 1]))
        else:
            value = _plain_json(toks[as_ + 1 : stop])
        if value is None or any(
            p[: len(path)] == path or path[: len(p)] == p for p in found
        ):
            return ()
        if not honour(path):
            return ()
        found[path] = json.dumps(
            value[0], ensure_ascii=False, sort_keys=True, separators=(',', ':')
        )
    return tuple(sorted(found.items()))


def _plain_string(tok: _Tok, value: str) -> bool:
    """A string regopy reads as OPA does, as source or as JSON data: no
    escape in its source, no character JSON would escape."""
    if tok.kind == 'str' and '\\' in tok.text:
        return False
    return not any(c in '"\\' or c < ' ' for c in value)


class _NotJson(Exception):
    pass


def _plain_json(toks: Sequence[_Tok]) -> tuple[Any] | None:
    """(value,) of the constant toks when it is plain JSON once read:
    objects with string keys (none twice), arrays, plain strings (see
    _plain_string), numbers Python reads back as written, true, false,
    null; None for anything else (a set, a variable, an escape...)."""
    toks = [t for t in toks if t.kind != 'nl']
    pos = 0

    def take() -> _Tok:
        nonlocal pos
        if pos >= len(toks):
            raise _NotJson
        pos += 1
        return toks[pos - 1]

    def string(tok: _Tok) -> str:
        value = _string_value(tok)
        if value is None or not _plain_string(tok, value):
            raise _NotJson
        return value

    def items(close: str, item: Callable[[], None]) -> None:
        if toks[pos : pos + 1] and toks[pos].is_('op', close):
            take()
            return
        while True:
            item()
            tok = take()
            if tok.is_('op', close):
                return
            if not tok.is_('op', ','):
                raise _NotJson
            if toks[pos : pos + 1] and toks[pos].is_('op', close):
                take()  # a trailing comma
                return

    def value() -> Any:
        tok = take()
        if tok.is_('op', '{'):
            obj: dict[str, Any] = {}

            def member() -> None:
                key = string(take())
                if key in obj or not take().is_('op', ':'):
                    raise _NotJson
                obj[key] = value()

            items('}', member)
            return obj
        if tok.is_('op', '['):
            arr: list[Any] = []
            items(']', lambda: arr.append(value()))
            return arr
        if tok.is_('op', '-'):
            tok = take()
            if tok.kind != 'num' or tok.start != toks[pos - 2].end:
                raise _NotJson
            return -number(tok)
        if tok.kind == 'num':
            return number(tok)
        if tok.kind in ('str', 'raw'):
            return string(tok)
        if tok.kind == 'ident' and tok.text in ('true', 'false', 'null'):
            return {'true': True, 'false': False, 'null': None}[tok.text]
        raise _NotJson

    def number(tok: _Tok) -> int | float:
        try:
            num = json.loads(tok.text)
        except ValueError:
            raise _NotJson from None
        if isinstance(num, float) and not (
            math.isfinite(num) and repr(num) == tok.text
        ):
            raise _NotJson  # 1e3, 0.10: not written back as read
        return num

    try:
        found = value()
    except _NotJson:
        return None
    return (found,) if pos == len(toks) else None


class Patches:
    """Which ``with data.P as C`` a variant may honour (see the module
    docstring): by P, for a test in a given module."""

    def __init__(self, modules: list[_Module], data: dict[str, Any]) -> None:
        self.modules = modules
        self.data = data
        self._ok: dict[tuple[str, ...], bool] = {}

    def honoured(self, owner: _Module) -> Honour:
        package = tuple(owner.package)

        def honour(path: tuple[str, ...]) -> bool:
            if package[: len(path)] == path:
                return False  # the test's own module would be left out
            if path not in self._ok:
                self._ok[path] = self._replaceable(path)
            return self._ok[path]

        return honour

    def _replaceable(self, path: tuple[str, ...]) -> bool:
        n = len(path)
        for m in self.modules:
            package = tuple(m.package)
            below = package[:n] == path
            if below and m.functions:
                return False
            for ref, _ in m.rules:
                full = package + ref
                if full[:n] == path and not below:
                    return False  # part of P stays defined
                if len(full) < n and path[: len(full)] == full:
                    return False  # a rule defines P's parent
        node: Any = self.data
        for key in path[:-1]:
            if key not in node:
                break
            node = node[key]
            if not isinstance(node, dict):
                return False  # data above P is not an object
        return True
