"""Overlays: the operator's own Rego, applied on top of a conversion.

An overlay directory holds Rego v1 files in package ``oslo_opa.overlay``
that define only::

    deny[<rule name>] contains <reason> if ...
    grant[<rule name>] contains <reason> if ...

(``"*"`` names every rule).  For every rule R the decision is false when
``deny[R]`` or ``deny["*"]`` holds a reason, otherwise true when
``grant[R]`` or ``grant["*"]`` does, otherwise the converted decision;
every converted module asks ``data.oslo_opa.lib.overlay_denies`` and
``overlay_grants`` for its own name (``rego/oslo_opa/overlay.rego``), so
this holds wherever R is decided, through ``rule:R`` too.

This module reads overlay files and checks them without evaluating them:
their package, that they define nothing but ``deny``/``grant`` sets,
which rules they can touch (a literal key names one rule; any other key
may name every rule), and what they read.  Compiling them is the
engine's job (``engine.py``); OPA compiles them itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

from oslo_opa import policy_files
from oslo_opa.errors import PolicyLoadError, StrictModeError
from oslo_opa.regotest.lexer import (
    _lex,
    _matching,
    _position,
    _ref_parts,
    _string_value,
    _Tok,
    _with_input_objects,
)
from oslo_opa.regotest.modules import _statements

PACKAGE = ('oslo_opa', 'overlay')
KINDS = ('deny', 'grant')
EVERY_RULE = '*'
_SHAPE = (
    'an overlay defines only deny[<rule name>] contains <reason> and '
    'grant[<rule name>] contains <reason>'
)


class OverlayError(PolicyLoadError):
    """An overlay file that must not be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One ``deny``/``grant`` rule of an overlay file.

    :ivar rule: the rule name its key spells, ``"*"``, or None when the
        key is computed (it may name any rule).
    """

    kind: str
    rule: str | None
    file: str
    line: int

    @property
    def where(self) -> str:
        return f'{self.file}:{self.line}'


@dataclasses.dataclass(frozen=True)
class Overlays:
    """The overlay files in force and what they can do.

    :ivar files: path -> text of every overlay file (tests left out).
    :ivar keys: every deny/grant rule, in file order.
    :ivar reads: the ``data`` references they make, as ground prefixes
        (path, line, prefix).
    :ivar strings: the strings their conditions compare (inputs worth
        trying).
    :ivar credentials: the credential keys they read.
    :ivar target_keys: the target keys they read.
    :ivar whole_input: whether they may read more than those keys.
    :ivar reads_rule: whether they read ``input.rule``.
    """

    files: dict[str, str]
    keys: tuple[Key, ...] = ()
    reads: tuple[tuple[str, int, tuple[str, ...]], ...] = ()
    strings: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()
    target_keys: tuple[str, ...] = ()
    whole_input: bool = False
    reads_rule: bool = False

    @property
    def input_keys(self) -> tuple[list[str], list[str]] | None:
        """(credential keys, target keys) the overlays read, or None when
        they may read any (a reference into input that is not a literal
        key): all they can tell apart of an input."""
        if self.whole_input:
            return None
        return list(self.credentials), list(self.target_keys)

    def __bool__(self) -> bool:
        return bool(self.files)

    @property
    def every_rule(self) -> bool:
        """Whether some key may name any rule (``"*"`` or computed)."""
        return any(k.rule in (None, EVERY_RULE) for k in self.keys)

    @property
    def named(self) -> frozenset[str]:
        """The rules named by a literal key."""
        return frozenset(
            k.rule
            for k in self.keys
            if k.rule is not None and k.rule != EVERY_RULE
        )

    def can_touch(self, rule: str) -> bool:
        """Whether an overlay may deny or grant rule on some input."""
        return self.every_rule or rule in self.named

    def keys_to_ask(self, kind: str, rules: Iterable[str]) -> list[str]:
        """Of rules (and ``"*"``), the keys a ``kind`` rule may have:
        what to ask about a decision that reads rules."""
        mine = [k for k in self.keys if k.kind == kind]
        if any(k.rule is None for k in mine):
            return [*rules, EVERY_RULE]
        named = {k.rule for k in mine}
        out = [r for r in rules if r in named]
        return out + [EVERY_RULE] if EVERY_RULE in named else out

    def check(
        self, rules: Iterable[str], prefix: str, strict: bool = False
    ) -> list[str]:
        """Check the overlays against a conversion's rules.

        :param rules: the rule names of the conversion.
        :param prefix: its package prefix (overlays must not read it).
        :returns: warnings, one per key naming no rule of the policy.
        :raises OverlayError: an overlay reads the converted rules.
        :raises StrictModeError: with strict, when there are warnings.
        """
        root = prefix.split('.')[0]
        for path, line, read in self.reads:
            if read[:1] == (root,):
                raise OverlayError(
                    f'{path}:{line}: reads data.{".".join(read)}: an overlay '
                    f'cannot read the converted rules (each of them reads '
                    f'the overlays, so that would be a cycle)'
                )
        known = set(rules)
        warnings = [
            f'{k.where}: {k.kind}[{k.rule!r}] names no rule of the policy '
            f'(renamed or removed?); it changes nothing'
            for k in self.keys
            if k.rule not in (None, EVERY_RULE) and k.rule not in known
        ]
        if strict and warnings:
            raise StrictModeError(warnings)
        return warnings


def files(paths: Sequence[str], tests: bool = False) -> dict[str, str]:
    """Every overlay file under paths (directories or files): path ->
    text; with tests, the operator's ``_test.rego`` files instead.

    :raises OverlayError: a path that does not exist or cannot be read.
    """
    found: dict[str, str] = {}
    for top in paths:
        if os.path.isdir(top):
            try:
                read = policy_files.read_modules(top, tests)
            except PolicyLoadError as e:
                raise OverlayError(str(e)) from e
            found.update((os.path.join(top, r), t) for r, t in read.items())
        elif not os.path.isfile(top):
            raise OverlayError(f'{top}: no such overlay file or directory')
        elif top.endswith('_test.rego') is tests:
            try:
                with open(top, encoding='utf-8') as f:
                    found[top] = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise OverlayError(f'{top}: cannot read: {e}') from e
    return found


def test_inputs(paths: Sequence[str]) -> list[dict]:
    """The constant inputs (``with input as {...}``) of the operator's
    ``_test.rego`` files under paths: inputs on which the overlays are
    known to do something, worth trying on every rule they can touch.
    Those that are not plain JSON are left out."""
    found: list[dict] = []
    for text in files(paths, tests=True).values():
        toks = _lex(text)
        for brace in _with_input_objects(toks):
            close = _matching(toks, brace, len(toks))
            if close is None:
                continue
            try:
                doc = json.loads(text[toks[brace].start : toks[close].end])
            except ValueError:
                continue
            if isinstance(doc, dict) and doc not in found:
                found.append(doc)
    return found


def load(paths: Sequence[str], embedded: bool = True) -> Overlays:
    """Read and check the overlay files under paths.

    :param embedded: for the embedded engine, which reads a string
        literal holding a backslash with its escape still in: refuse one.
    :raises OverlayError: naming the file and line of the first problem.
    """
    return parse(files(paths), embedded)


def parse(texts: dict[str, str], embedded: bool = True) -> Overlays:
    """Check overlay texts (path -> text); see :func:`load`."""
    keys: list[Key] = []
    reads: list[tuple[str, int, tuple[str, ...]]] = []
    strings: list[str] = []
    creds: list[str] = []
    target: list[str] = []
    whole = rule_read = False
    for path, text in texts.items():
        toks = _lex(text)
        _check_strings(path, text, toks, embedded)
        package_seen = False
        for first, end in _statements(toks):
            head = toks[first]
            line = _position(text, head.start)[0]
            if head.text == 'package':
                _check_package(path, line, toks, first, end)
                package_seen = True
            elif head.text == 'import':
                continue
            else:
                keys.append(_key(path, line, toks, first, end))
                strings += _compared(toks, first, end)
        if not package_seen:
            raise OverlayError(f'{path}: not a Rego module (no package)')
        for i, tok in enumerate(toks):
            if not _starts_ref(toks, i, ('data', 'input')):
                continue
            parts, _, _ = _ref_parts(toks, i, len(toks))
            names = tuple(p for p, _ in parts[1:])
            line = _position(text, tok.start)[0]
            if tok.text == 'data':
                if not names:
                    raise OverlayError(
                        f'{path}:{line}: reads data as a whole (data or '
                        f'data[x]); name the document: data.<key>...'
                    )
                reads.append((path, line, names))
            elif names[:1] == ('credentials',) and len(names) > 1:
                creds.append(names[1])
            elif names[:1] == ('target',) and len(names) > 1:
                target.append(names[1])
            elif names == ('rule',):
                rule_read = True
            else:
                # input, input.credentials, input[x]...: may read anything.
                whole = True
    return Overlays(
        files=dict(texts),
        keys=tuple(keys),
        reads=tuple(reads),
        strings=tuple(dict.fromkeys(strings)),
        credentials=tuple(dict.fromkeys(creds)),
        target_keys=tuple(dict.fromkeys(target)),
        whole_input=whole,
        reads_rule=rule_read,
    )


def _starts_ref(toks: list[_Tok], i: int, names: Sequence[str]) -> bool:
    """toks[i] is one of names heading a reference (not x.data)."""
    if not (toks[i].kind == 'ident' and toks[i].text in names):
        return False
    prev = toks[i - 1] if i else None
    return not (
        prev is not None and prev.is_('op', '.') and prev.end == toks[i].start
    )


def _compared(toks: list[_Tok], first: int, end: int) -> list[str]:
    """The strings of a deny/grant rule's body (not its key or reason):
    what it compares the input with."""
    body = next(
        (
            k + 1
            for k in range(first, end)
            if toks[k].is_('ident', 'if') and toks[k].depth == 0
        ),
        end,
    )
    found = (_string_value(t) for t in toks[body:end])
    return [v for v in found if v is not None]


def _check_strings(
    path: str, text: str, toks: list[_Tok], embedded: bool
) -> None:
    for tok in toks:
        if embedded and tok.kind == 'str' and '\\' in tok.text:
            line = _position(text, tok.start)[0]
            raise OverlayError(
                f'{path}:{line}: the string {tok.text} holds a backslash '
                f'escape, which the embedded engine (regopy) would keep as '
                f'written, so it would equal no input; write the text '
                f'plainly or as a raw string (`...`)'
            )


def _check_package(
    path: str, line: int, toks: list[_Tok], first: int, end: int
) -> None:
    parts, dynamic, _ = _ref_parts(toks, first + 1, end)
    package = tuple(p for p, _ in parts)
    if dynamic or package != PACKAGE:
        shown = ''.join(
            t.text for t in toks[first + 1 : end] if t.text != '\n'
        )
        raise OverlayError(
            f'{path}:{line}: package {shown}: an overlay file must be in '
            f'package {".".join(PACKAGE)}'
        )


def _key(path: str, line: int, toks: list[_Tok], first: int, end: int) -> Key:
    """The Key a rule statement defines, or OverlayError."""
    where = f'{path}:{line}'
    head = toks[first]
    if head.text == 'default' or head.text not in KINDS:
        name = toks[first + 1].text if head.text == 'default' else head.text
        raise OverlayError(f'{where}: defines {name}: {_SHAPE}')
    kind = head.text
    i = first + 1
    if i < end and toks[i].is_('ident', 'contains'):
        raise OverlayError(
            f'{where}: {kind} needs a rule name: {kind}[<rule name>] '
            f'contains <reason>'
        )
    if not (i < end and toks[i].is_('op', '[') and toks[i].start == head.end):
        raise OverlayError(
            f'{where}: {kind} must be a set of reasons per rule: '
            f'{kind}[<rule name>] contains <reason>'
        )
    close = _matching(toks, i, end)
    if close is None:
        raise OverlayError(f'{where}: {kind}[ is not closed')
    after = close + 1
    if not (after < end and toks[after].is_('ident', 'contains')):
        raise OverlayError(
            f'{where}: {kind}[...] must be a set of reasons: '
            f'{kind}[<rule name>] contains <reason> (not :=, = or a '
            f'nested reference)'
        )
    inner = [t for t in toks[i + 1 : close] if t.kind != 'nl']
    rule = _string_value(inner[0]) if len(inner) == 1 else None
    return Key(kind, rule, path, line)
