"""A small Rego lexer: tokens, brackets, references and top-level
expressions, enough to find tests and rewrite them for regopy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_KEYWORDS = frozenset(
    'as contains data default else every false if import in input not '
    'null package some true with'.split()
)
_CONSTANTS = frozenset(('true', 'false', 'null'))
_GROUND_OPS = frozenset('[]{},:-')
_IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')
_TOKEN = re.compile(
    r"""
    (?P<nl>\n)
    |(?P<ws>[ \t\r\f\v]+)
    |(?P<comment>\#[^\n]*)
    |(?P<str>"(?:[^"\\\n]|\\.)*"?)
    |(?P<raw>`[^`]*`?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<num>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<op>:=|==|!=|<=|>=|.)
    """,
    re.X | re.S,
)
_OPEN = '([{'
_CLOSE = ')]}'


class _Tok:
    __slots__ = ('kind', 'start', 'end', 'depth', 'text')

    def __init__(
        self, kind: str, start: int, end: int, depth: int, text: str
    ) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        # Bracket depth outside the token: a bracket pair shares its depth.
        self.depth = depth
        self.text = text

    def is_(self, kind: str, text: str | None = None) -> bool:
        return self.kind == kind and (text is None or self.text == text)


def _lex(text: str) -> list[_Tok]:
    """The tokens of text, without blanks and comments (newlines kept)."""
    toks = []
    depth = 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or 'op'
        if kind in ('ws', 'comment'):
            continue
        value = m.group()
        if kind == 'op' and value in _CLOSE:
            depth = max(depth - 1, 0)
        toks.append(_Tok(kind, m.start(), m.end(), depth, value))
        if kind == 'op' and value in _OPEN:
            depth += 1
    return toks


def _string_value(tok: _Tok) -> str | None:
    """The value of a string token, None when it is not one."""
    if tok.kind == 'raw' and len(tok.text) >= 2 and tok.text.endswith('`'):
        return tok.text[1:-1]
    if tok.kind == 'str':
        try:
            value = json.loads(tok.text)
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    return None


def _ref_text(parts: Sequence[str]) -> str:
    """parts as a Rego reference: a.b["c-d"]."""
    out = ''
    for part in parts:
        if _IDENT.match(part) and part not in _KEYWORDS:
            out += f'.{part}' if out else part
        else:
            out += f'[{json.dumps(part)}]'
    return out


def _key_source(value: str, tok: _Tok) -> str:
    """A string literal for a reference part, spelled as in the source
    when it was a string there (regopy does not unescape strings)."""
    return tok.text if tok.kind in ('str', 'raw') else f'"{value}"'


def _position(text: str, offset: int) -> tuple[int, int]:
    row = text.count('\n', 0, offset) + 1
    return row, offset - (text.rfind('\n', 0, offset) + 1) + 1


def _ref_parts(
    toks: list[_Tok], i: int, end: int
) -> tuple[list[tuple[str, _Tok]], bool, int]:
    """The ground prefix of the reference starting at toks[i], whether a
    non-ground part follows, and the index after the reference."""
    parts = [(toks[i].text, toks[i])]
    dynamic = False
    i += 1
    while i < end:
        tok = toks[i]
        if tok.is_('op', '.') and i + 1 < end and toks[i + 1].kind == 'ident':
            if not dynamic:
                parts.append((toks[i + 1].text, toks[i + 1]))
            i += 2
        elif tok.is_('op', '[') and tok.start == toks[i - 1].end:
            close = _matching(toks, i, end)
            if close is None:
                break
            inner = toks[i + 1 : close]
            value = _string_value(inner[0]) if len(inner) == 1 else None
            if value is None:
                dynamic = True
            elif not dynamic:
                parts.append((value, inner[0]))
            i = close + 1
        else:
            break
    return parts, dynamic, i


def _matching(toks: list[_Tok], i: int, end: int) -> int | None:
    """Index of the bracket closing toks[i], None if not before end."""
    close = _CLOSE[_OPEN.index(toks[i].text)]
    for k in range(i + 1, end):
        if toks[k].is_('op', close) and toks[k].depth == toks[i].depth:
            return k
    return None


def _split(toks: list[_Tok], lo: int, hi: int) -> list[tuple[int, int]]:
    """The expressions of a body: [lo, hi) split at newlines and ``;``
    at the depth of toks[lo]."""
    if lo >= hi:
        return []
    depth = toks[lo].depth
    out = []
    start = lo
    for k in range(lo, hi + 1):
        if k == hi or (
            toks[k].depth == depth
            and (toks[k].kind == 'nl' or toks[k].is_('op', ';'))
        ):
            if k > start:
                out.append((start, k))
            start = k + 1
    return out


def _ground(toks: Sequence[_Tok]) -> bool:
    """A constant term: no variable, call or operator."""
    return bool(toks) and all(
        t.kind in ('str', 'raw', 'num', 'nl')
        or (t.kind == 'op' and t.text in _GROUND_OPS)
        or (t.kind == 'ident' and t.text in _CONSTANTS)
        for t in toks
    )


def _with_input_objects(toks: list[_Tok]) -> list[int]:
    """The index of the ``{`` of every ``with input as {...}``."""
    return [
        i + 3
        for i in range(len(toks) - 3)
        if toks[i].is_('ident', 'with')
        and toks[i + 1].is_('ident', 'input')
        and toks[i + 2].is_('ident', 'as')
        and toks[i + 3].is_('op', '{')
    ]
