"""Rego modules: their package, rules and tests, and the rewrites regopy
needs.

A test is a rule whose name starts with ``test_``; ``todo_test_`` rules are
reported as skipped.  A test with a variable in its head (``test_x[note]
if ...``) is an object of test cases.

Every test not split (see ``split``) is compiled as written, except that
``with input as {"a": A}`` becomes ``with input.a as (A)`` (the base
input is unset, so keys the object does not name stay undefined; ``with
input as {}`` is dropped) and a brace-less body holding ``with`` is
braced (regopy rejects ``p if not q with ...``).  Rewrites keep every
line in place, so regopy's errors point at the right line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_opa.regotest.errors import RegoTestError
from oslo_opa.regotest.lexer import (
    _IDENT,
    _KEYWORDS,
    _lex,
    _matching,
    _position,
    _ref_parts,
    _ref_text,
    _string_value,
    _Tok,
    _with_input_objects,
)

TEST_PREFIX = 'test_'
SKIP_PREFIX = 'todo_test_'


@dataclasses.dataclass
class _Step:
    """One expression of a split test: its rule and the input to set."""

    entry: str
    input_term: str | None


@dataclasses.dataclass
class _Test:
    name: str  # as reported: test_x, test_x#01, p.test_x
    rule_ref: list[str]  # the head's reference up to the test name
    name_tok: _Tok | None  # the identifier naming it, renamed on dups
    row: int
    col: int
    first: int  # its statement's tokens: [first, end)
    end: int
    span: tuple[int, int]  # its text, blanked to compile without it
    skip: bool = False
    function: bool = False
    cases: bool = False  # a test object: test_x[note] if ...
    entry: str = ''  # regopy entrypoint: pkg/path/test_x
    steps: list[_Step] | None = None  # when split (see split.py)
    helpers: str = ''  # the rules of its steps
    # Its steps' ``with data.P as C`` modifiers honoured by a variant of
    # the modules and data (see split.py): sorted (P, C as JSON) pairs.
    patch: tuple[tuple[tuple[str, ...], str], ...] = ()


@dataclasses.dataclass
class _Module:
    file: str
    text: str
    toks: list[_Tok]
    package: list[str]
    tests: list[_Test]
    heads: list[_Tok]  # the name of every rule
    imports: set[str]  # the names imports bind
    edits: list[tuple[int, int, str]]
    reads: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    # (ground reference, offset) of every rule head
    rules: list[tuple[tuple[str, ...], int]] = dataclasses.field(
        default_factory=list
    )
    functions: bool = False  # it defines a function

    @property
    def package_name(self) -> str:
        return 'data.' + _ref_text(self.package)

    def render(self, keep: set[int] | None = None) -> str:
        """The text handed to regopy: split tests replaced by the rules
        of their steps, and only the tests in keep (ids; None: all)."""
        kept = [t for t in self.tests if keep is None or id(t) in keep]
        blanks = [
            t.span
            for t in self.tests
            if t.steps is not None or (keep is not None and id(t) not in keep)
        ]
        edits = [
            e
            for e in self.edits
            if not any(s <= e[0] and e[1] <= end for s, end in blanks)
        ]
        for s, end in blanks:
            edits.append((s, end, '\n' * self.text.count('\n', s, end)))
        out = []
        pos = 0
        for start, end, repl in sorted(edits, key=lambda e: (e[0], e[1])):
            out.append(self.text[pos:start])
            out.append(repl)
            pos = end
        out.append(self.text[pos:])
        helpers = ''.join(t.helpers for t in kept if t.steps is not None)
        if helpers:
            out.append('\n\n' + helpers)
        return ''.join(out)


def _statements(toks: list[_Tok]) -> list[tuple[int, int]]:
    """(first, end) token indexes of each top-level statement: a line
    that starts, outside brackets, with a name other than ``else``."""
    starts = []
    line_start = True
    for i, tok in enumerate(toks):
        if tok.kind == 'nl':
            line_start = line_start or tok.depth == 0
            continue
        if line_start and tok.depth == 0 and tok.kind == 'ident':
            if tok.text != 'else':
                starts.append(i)
        line_start = False
    return [
        (s, starts[n + 1] if n + 1 < len(starts) else len(toks))
        for n, s in enumerate(starts)
    ]


def _scan(file: str, text: str) -> _Module:
    """Find the package, the rules, the tests and the rewrites regopy
    needs."""
    toks = _lex(text)
    module = _Module(file, text, toks, [], [], [], set(), [])
    package = None
    for first, end in _statements(toks):
        head = toks[first]
        if head.text == 'package':
            if first + 1 < end and toks[first + 1].kind == 'ident':
                parts, dynamic, _ = _ref_parts(toks, first + 1, end)
                if not dynamic:
                    package = [p for p, _ in parts]
            continue
        if head.text == 'import':
            names = [t for t in toks[first + 1 : end] if t.kind == 'ident']
            if names:
                module.imports.add(names[-1].text)
            continue
        module.edits += _brace_body(toks, first, end)
        i = first + 1 if head.text == 'default' else first
        if i >= end or toks[i].kind != 'ident':
            continue
        module.heads.append(toks[i])
        parts, _, after = _ref_parts(toks, i, end)
        module.rules.append((tuple(p for p, _ in parts), toks[first].start))
        if after < end and toks[after].is_('op', '('):
            module.functions = True
        test = _test_rule(text, toks, first, i, end)
        if test is not None:
            module.tests.append(test)
    if package is None:
        raise RegoTestError(f'{file}: not a Rego module (no package)')
    module.package = package
    module.edits += _with_input_edits(text, toks)
    module.reads = _reads(toks)
    return module


def _reads(toks: list[_Tok]) -> list[tuple[str, ...]]:
    """The ground prefixes of the ``data`` references (imports included):
    () for ``data`` itself or ``data[x]``, which may read anything."""
    reads = set()
    for i, tok in enumerate(toks):
        if not tok.is_('ident', 'data'):
            continue
        prev = toks[i - 1] if i else None
        if prev is not None and prev.is_('op', '.') and prev.end == tok.start:
            continue  # x.data: a field
        parts, _, _ = _ref_parts(toks, i, len(toks))
        reads.add(tuple(p for p, _ in parts[1:]))
    return sorted(reads)


def _test_rule(
    text: str, toks: list[_Tok], first: int, i: int, end: int
) -> _Test | None:
    """The test a rule statement defines, if its name makes it one."""
    parts, dynamic, after = _ref_parts(toks, i, end)
    for n, (part, tok) in enumerate(parts):  # noqa: B007 (used below)
        if part.startswith((TEST_PREFIX, SKIP_PREFIX)):
            break
    else:
        return None
    rule_ref = [p for p, _ in parts[: n + 1]]
    nxt = toks[after] if after < end else None
    row, col = _position(text, toks[first].start)
    span_end = toks[end].start if end < len(toks) else len(text)
    return _Test(
        name=_ref_text(rule_ref),
        rule_ref=rule_ref,
        name_tok=tok if tok.kind == 'ident' else None,
        row=row,
        col=col,
        first=first,
        end=end,
        span=(toks[first].start, span_end),
        skip=part.startswith(SKIP_PREFIX),
        function=nxt is not None and nxt.is_('op', '('),
        cases=dynamic
        and not (nxt is not None and nxt.is_('ident', 'contains')),
    )


def _brace_body(
    toks: list[_Tok], first: int, end: int
) -> list[tuple[int, int, str]]:
    """Brace a brace-less rule body holding ``with``: regopy rejects
    ``p if not q with input.x as 1``, not ``p if { ... }``."""
    for i in range(first, end):
        if toks[i].is_('ident', 'if') and toks[i].depth == 0:
            break
    else:
        return []
    body = i + 1
    if body >= end or toks[body].is_('op', '{') or toks[body].kind == 'nl':
        return []
    last = body
    while last + 1 < end and not (
        toks[last + 1].depth == 0
        and (
            toks[last + 1].kind == 'nl' or toks[last + 1].is_('ident', 'else')
        )
    ):
        last += 1
    if not any(t.is_('ident', 'with') for t in toks[body : last + 1]):
        return []
    return [
        (toks[body].start, toks[body].start, '{ '),
        (toks[last].end, toks[last].end, ' }'),
    ]


def _comma_split(
    toks: list[_Tok], lo: int, hi: int, depth: int
) -> list[tuple[int, int]]:
    """[lo, hi) split at the commas of depth, newlines left out."""
    out = []
    cur: list[int] = []
    for k in range(lo, hi + 1):
        if k == hi or (toks[k].is_('op', ',') and toks[k].depth == depth):
            if cur:
                out.append((cur[0], cur[-1] + 1))
            cur = []
        elif toks[k].kind != 'nl':
            cur.append(k)
    return out


def _object_items(
    toks: list[_Tok], brace: int
) -> tuple[list[tuple[_Tok, int, int]], int] | None:
    """The (key, value start, value end) items of the object literal
    opening at toks[brace] and the index of its closing brace, or None
    when it is not an object literal with string keys."""
    close = _matching(toks, brace, len(toks))
    if close is None:
        return None
    depth = toks[brace].depth + 1
    items = []
    for lo, hi in _comma_split(toks, brace + 1, close, depth):
        if any(t.is_('op', '|') and t.depth == depth for t in toks[lo:hi]):
            return None  # a comprehension
        if not (
            hi - lo >= 3
            and _string_value(toks[lo]) is not None
            and toks[lo + 1].is_('op', ':')
        ):
            return None  # a set, a variable key...
        items.append((toks[lo], toks[lo + 2].start, toks[hi - 1].end))
    return items, close


def _with_input_edits(
    text: str, toks: list[_Tok]
) -> list[tuple[int, int, str]]:
    """``with input as {"a": A, "b": B}`` -> ``with input.a as (A) with
    input.b as (B)``: regopy aborts compiling the former."""
    edits = []
    for brace in _with_input_objects(toks):
        i = brace - 3
        found = _object_items(toks, brace)
        if found is None:
            continue
        items, close = found
        nxt = toks[close + 1] if close + 1 < len(toks) else None
        if not (
            nxt is None
            or nxt.kind == 'nl'
            or nxt.is_('ident', 'with')
            or (nxt.kind == 'op' and nxt.text in ';)]}')
        ):
            continue  # {...}.x, {...} == y: not a plain term
        start, end = toks[i + 1].start, toks[close].end
        lines = text.count('\n', start, end)
        if not items:
            if lines == 0:
                edits.append((toks[i].start, end, ''))
            continue
        mods = []
        for n, (key_tok, vstart, vend) in enumerate(items):
            key = _string_value(key_tok) or ''
            if _IDENT.match(key) and key not in _KEYWORDS:
                target = f'input.{key}'
            else:
                target = f'input[{key_tok.text}]'
            value = text[vstart:vend]
            if n == len(items) - 1:
                # The object's other newlines, kept inside brackets.
                inner = sum(text.count('\n', s, e) for _, s, e in items)
                value += '\n' * (lines - inner)
            mods.append(f'{target} as ({value})')
        edits.append((start, end, ' with '.join(mods)))
    return edits


def _check_conflicts(modules: list[_Module], data: dict[str, Any]) -> None:
    """A rule where data has a value is an error, as in OPA.

    :raises RegoTestError: naming the rule.
    """
    if not data:
        return
    for m in modules:
        for ref, offset in m.rules:
            path = (*m.package, *ref)
            node: Any = data
            for key in path:
                if not isinstance(node, dict):
                    conflict = True  # under a value that is not an object
                    break
                if key not in node:
                    conflict = False
                    break
                node = node[key]
            else:
                conflict = True
            if conflict:
                row, _ = _position(m.text, offset)
                raise RegoTestError(
                    f'{m.file}:{row}: conflicting rule for data path '
                    f'{"/".join(path)} found'
                )
