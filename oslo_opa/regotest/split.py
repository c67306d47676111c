"""Naming tests and splitting them into independent expressions.

As in OPA, a second definition of a test in the same package is a test
of its own, named ``test_x#01``.

regopy 1.5.2 compiles every ``with input...`` into a copy of all the
rules the expression reaches: a second or more per test on a converted
policy, and gigabytes of memory; and ``with input as <object>`` aborts
the process.  So a test ``test_x if { E1 <newline> E2 ... }`` whose
expressions share no variable is not compiled as written: each
expression becomes a rule of its own, without its ``with input``
modifiers, evaluated with the constant input they set as the query's
input; the test passes when each, in order, is true.  That is what OPA
computes for independent expressions.
"""

from __future__ import annotations

import collections
from typing import Any

from oslo_opa.regotest.lexer import (
    _KEYWORDS,
    _ground,
    _key_source,
    _matching,
    _ref_parts,
    _split,
    _Tok,
)
from oslo_opa.regotest.modules import _Module, _Step, _Test


def _name_tests(modules: list[_Module]) -> None:
    """Number second definitions (test_x#01) and give every test a name
    regopy can take as an entrypoint."""
    idents = {t.text for m in modules for t in m.toks if t.kind == 'ident'}
    count: dict[str, int] = {}
    for module in modules:
        for test in module.tests:
            key = f'{module.package_name}.{test.name}'
            k = count.get(key, 0)
            if not test.skip:
                count[key] = k + 1
            rule_ref = list(test.rule_ref)
            if k and not test.skip and test.name_tok is not None:
                test.name = f'{test.name}#{k:02d}'
                new = f'{test.name_tok.text}__oslo_opa_{k:02d}'
                while new in idents:
                    new += '_'
                idents.add(new)
                rule_ref[-1] = new
                tok = test.name_tok
                module.edits.append((tok.start, tok.end, new))
            test.entry = '/'.join([*module.package, *rule_ref])


def _split_tests(modules: list[_Module]) -> None:
    """Split every test that can be (see the module docstring)."""
    rules: dict[tuple[str, ...], set[str]] = collections.defaultdict(set)
    heads: collections.Counter[str] = collections.Counter()
    for m in modules:
        rules[tuple(m.package)].update(t.text for t in m.heads)
        heads.update(t.text for t in m.heads)
    idents = collections.Counter(
        t.text for m in modules for t in m.toks if t.kind == 'ident'
    )
    serial = 0
    for m in modules:
        known = _KEYWORDS | rules[tuple(m.package)] | m.imports
        for test in m.tests:
            if test.skip or test.function or test.name_tok is None:
                continue
            name = test.name_tok.text
            if idents[name] > heads[name]:
                continue  # another rule reads it: it stays a rule
            found = _steps(m, test, known)
            if found is None:
                continue
            test.steps = []
            for body, term in found:
                serial += 1
                helper = f'__oslo_opa_step{serial}'
                while helper in idents:
                    helper += '_'
                test.helpers += f'{helper} if {{\n\t{body}\n}}\n\n'
                entry = '/'.join([*m.package, helper])
                test.steps.append(_Step(entry, term))


def _body(m: _Module, test: _Test) -> tuple[int, int] | None:
    """[lo, hi) tokens of the body of ``test_x if {...}`` or ``test_x if
    expr``; None for any other form of test."""
    toks, first, end = m.toks, test.first, test.end
    if not (first + 2 < end and toks[first + 1].is_('ident', 'if')):
        return None
    lo = first + 2
    if toks[lo].is_('op', '{'):
        hi = _matching(toks, lo, end)
        if hi is None:
            return None
        lo, rest = lo + 1, hi + 1
    else:
        hi = lo
        while hi < end and not (
            toks[hi].depth == 0
            and (toks[hi].kind == 'nl' or toks[hi].is_('ident', 'else'))
        ):
            hi += 1
        rest = hi
    if any(t.kind != 'nl' for t in toks[rest:end]):
        return None  # else, or anything else after the body
    return lo, hi


def _steps(
    m: _Module, test: _Test, known: frozenset[str]
) -> list[tuple[str, str | None]] | None:
    """(rule body, input term) of each expression of test; None when it
    cannot be split: expressions sharing a variable, a ``with input``
    that is not a constant..."""
    found = _body(m, test)
    if found is None:
        return None
    exprs = _split(m.toks, *found)
    if not exprs:
        return None
    seen: set[str] = set()
    steps = []
    for lo, hi in exprs:
        names = _var_names(m.toks, lo, hi, known)
        if names & seen:
            return None  # shared: the expressions are not independent
        seen |= names
        step = _step(m.toks, m.text, lo, hi)
        if step is None:
            return None
        steps.append(step)
    return steps


def _step(
    toks: list[_Tok], text: str, lo: int, hi: int
) -> tuple[str, str | None] | None:
    """The expression [lo, hi) without its ``with input`` modifiers, and
    the input they set, as a Rego term (None: no input)."""
    depth = toks[lo].depth
    withs = [
        k
        for k in range(lo, hi)
        if toks[k].is_('ident', 'with') and toks[k].depth == depth
    ]
    if withs and withs[0] == lo:
        return None
    whole: tuple[int, int] | None = None  # with input as X
    paths: list[tuple[list[tuple[str, str]], int, int]] = []
    cut: list[tuple[int, int]] = []  # the modifiers moved to the input
    for n, w in enumerate(withs):
        stop = withs[n + 1] if n + 1 < len(withs) else hi
        as_ = next(
            (
                k
                for k in range(w + 1, stop)
                if toks[k].is_('ident', 'as') and toks[k].depth == depth
            ),
            None,
        )
        if as_ is None or as_ == w + 1 or as_ + 1 >= stop:
            return None
        if not toks[w + 1].is_('ident', 'input'):
            continue  # with data.x as ...: stays
        parts, dynamic, after = _ref_parts(toks, w + 1, as_)
        if dynamic or after != as_ or not _ground(toks[as_ + 1 : stop]):
            return None
        if len(parts) == 1:
            if paths or whole:
                return None
            whole = (as_ + 1, stop)
            cut.append((w, stop))
        elif whole is None:
            keys = [(v, _key_source(v, t)) for v, t in parts[1:]]
            paths.append((keys, as_ + 1, stop))
            cut.append((w, stop))
    term = None
    if whole is not None:
        term = text[toks[whole[0]].start : toks[whole[1] - 1].end]
    elif paths:
        term = _input_term(
            [(k, text[toks[s].start : toks[e - 1].end]) for k, s, e in paths]
        )
        if term is None:
            return None
    body = []
    pos = toks[lo].start
    for w, stop in cut:
        body.append(text[pos : toks[w - 1].end])
        pos = toks[stop - 1].end
    body.append(text[pos : toks[hi - 1].end])
    return ''.join(body).rstrip(), term


def _input_term(mods: list[tuple[list[tuple[str, str]], str]]) -> str | None:
    """The input ``with input.a.b as V ...`` builds, as a Rego object;
    None when two modifiers overlap."""
    tree: dict[str, Any] = {}
    source: dict[str, str] = {}
    for keys, value in mods:
        node = tree
        for key, src in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return None
            source[key] = src
        key, src = keys[-1]
        if key in node:
            return None
        node[key] = value
        source[key] = src

    def render(node: dict[str, Any]) -> str:
        return '{%s}' % ', '.join(
            f'{source[k]}: {render(v) if isinstance(v, dict) else v}'
            for k, v in node.items()
        )

    return render(tree)


def _var_names(
    toks: list[_Tok], lo: int, hi: int, known: frozenset[str]
) -> set[str]:
    """Names in [lo, hi) that may be variables: not rules of the package,
    imports, keywords, fields (x.name) or functions called."""
    names = set()
    for i in range(lo, hi):
        tok = toks[i]
        if tok.kind != 'ident' or tok.text in known:
            continue
        prev = toks[i - 1] if i else None
        if prev is not None and prev.is_('op', '.') and prev.end == tok.start:
            continue
        k = i
        while k + 2 < len(toks) and toks[k + 1].is_('op', '.'):
            if toks[k + 2].kind != 'ident':
                break
            k += 2
        if k + 1 < len(toks) and toks[k + 1].is_('op', '('):
            continue  # f(...), ns.f(...): a function
        names.add(tok.text)
    return names
