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

A binding ``v := <constant>`` whose variable is only ever the value of
later ``with ... as v`` modifiers counts as the constant written there
(``inp := {...}`` then ``allow with input as inp``): the binding, which
cannot fail, is dropped and the expressions no longer share ``v``.

regopy compiles ``with data.P as C`` the same slow way (and merges C
with the rules below P, which OPA replaces): where OPA's meaning of it is
plainly "the document at P is C", a step leaves it out and runs in a
*variant* of the modules and data (see patches.py).  All the steps of a
test share one variant; where any modifier cannot be honoured so, the
step's data modifiers stay as written for regopy to compile, and where
the steps' variants differ, all of them do.
"""

from __future__ import annotations

import collections
from collections.abc import Container, Sequence
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
from oslo_opa.regotest.patches import Honour, Patch, Patches, data_patch


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


def _split_tests(
    modules: list[_Module], data: dict[str, Any] | None = None
) -> None:
    """Split every test that can be (see the module docstring); data:
    the data document loaded with the modules."""
    patches = Patches(modules, data or {})
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
            found = _steps(m, test, known, patches.honoured(m))
            if found is None:
                continue
            found, test.patch = found
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
    m: _Module,
    test: _Test,
    known: frozenset[str],
    honour: Honour | None = None,
) -> tuple[list[tuple[str, str | None]], Patch] | None:
    """(rule body, input term) of each expression of test, and the data
    patch its steps share (see _step); None when it cannot be split:
    expressions sharing a variable, a ``with input`` that is not a
    constant..."""
    found = _body(m, test)
    if found is None:
        return None
    exprs = _split(m.toks, *found)
    if not exprs:
        return None
    # A local named like a rule or an import hides it in this body.
    known = known - _declared(m.toks, exprs)
    subst, dropped = _constants(m.toks, m.text, exprs)
    seen: set[str] = set()
    kept = []
    for n, (lo, hi) in enumerate(exprs):
        if n in dropped:
            continue
        names = _var_names(m.toks, lo, hi, known, subst)
        if names & seen:
            return None  # shared: the expressions are not independent
        seen |= names
        kept.append((lo, hi))
    for rule in (honour, None):
        steps = []
        patches = set()
        for lo, hi in kept:
            step = _step(m.toks, m.text, lo, hi, subst, rule)
            if step is None:
                return None
            body, term, patch = step
            steps.append((body, term))
            patches.add(patch)
        if len(patches) == 1:
            return steps, patches.pop()
    # Steps in different variants: every data modifier stays.
    return steps, ()


def _declared(toks: list[_Tok], exprs: list[tuple[int, int]]) -> set[str]:
    """Names the body may declare (``x := ...``, ``[x, y] := ...``,
    ``some x in ...``): an over-approximation, as every name it holds
    counts as a variable."""
    names = set()
    for lo, hi in exprs:
        depth = toks[lo].depth
        mark = 'in' if toks[lo].is_('ident', 'some') else ':='
        end = next(
            (
                k
                for k in range(lo, hi)
                if toks[k].text == mark and toks[k].depth == depth
            ),
            hi if mark == 'in' else lo,
        )
        names |= {t.text for t in toks[lo:end] if t.kind == 'ident'}
    return names - _KEYWORDS


def _constants(
    toks: list[_Tok], text: str, exprs: list[tuple[int, int]]
) -> tuple[dict[int, str], set[int]]:
    """The bindings ``v := <constant>`` whose variable is only ever the
    value of a later ``with ... as v``: the constant's source to write
    in place of each such v (token index -> text), and the bindings to
    drop (indexes in exprs).  Binding a constant always succeeds, so
    dropping it leaves OPA's result as it is."""
    subst: dict[int, str] = {}
    dropped: set[int] = set()
    body = range(exprs[0][0], exprs[-1][1])
    for n, (lo, hi) in enumerate(exprs):
        name = _binding(toks, lo, hi)
        if name is None:
            continue
        uses = [k for k in body if k != lo and _mentions(toks, k, name)]
        if uses and all(k >= hi and _with_value(toks, k, exprs) for k in uses):
            value = text[toks[lo + 2].start : toks[hi - 1].end]
            subst.update(dict.fromkeys(uses, value))
            dropped.add(n)
    return subst, dropped


def _binding(toks: list[_Tok], lo: int, hi: int) -> str | None:
    """v when the expression [lo, hi) is ``v := <constant>``."""
    if not (
        hi - lo >= 3
        and toks[lo].kind == 'ident'
        and toks[lo].text not in _KEYWORDS
        and toks[lo].text != '_'  # each _ is a variable of its own
        and toks[lo + 1].is_('op', ':=')
        and _literal(toks[lo + 2 : hi])
    ):
        return None
    return toks[lo].text


def _literal(toks: Sequence[_Tok]) -> bool:
    """A constant that is a literal: no reference into it (``[1][5]`` is
    undefined) and no arithmetic, so binding it always succeeds."""
    toks = [t for t in toks if t.kind != 'nl']
    if not _ground(toks):
        return False
    return not any(
        tok.kind == 'op' and tok.text in ('[', '-') and _term_end(prev)
        for prev, tok in zip(toks, toks[1:], strict=False)
    )


def _term_end(tok: _Tok) -> bool:
    """tok may end a term (what follows it applies to that term)."""
    return tok.kind in ('str', 'raw', 'num', 'ident') or (
        tok.kind == 'op' and tok.text in (')', ']', '}')
    )


def _mentions(toks: list[_Tok], k: int, name: str) -> bool:
    """toks[k] may be the variable name: any such identifier but a field
    (x.name); strings and object keys spelled as strings are not."""
    if not toks[k].is_('ident', name):
        return False
    prev = toks[k - 1] if k else None
    return not (
        prev is not None and prev.is_('op', '.') and prev.end == toks[k].start
    )


def _with_value(
    toks: list[_Tok], k: int, exprs: list[tuple[int, int]]
) -> bool:
    """toks[k] is the whole value of a modifier of its expression: ``...
    with T as <toks[k]>``, then the expression's end or another with."""
    lo, hi = next((e for e in exprs if e[0] <= k < e[1]), (k, k))
    if lo == hi:
        return False  # not in an expression (cannot happen: be safe)
    # Identifiers do not change the depth: at the expression's, so are
    # the as and the with around it.
    return (
        toks[k].depth == toks[lo].depth
        and k - 1 > lo
        and toks[k - 1].is_('ident', 'as')
        and (k + 1 == hi or toks[k + 1].is_('ident', 'with'))
    )


def _step(
    toks: list[_Tok],
    text: str,
    lo: int,
    hi: int,
    subst: dict[int, str] | None = None,
    honour: Honour | None = None,
) -> tuple[str, str | None, Patch] | None:
    """The expression [lo, hi) without its ``with input`` modifiers, the
    input they set, as a Rego term (None: no input), and the data patch
    its ``with data`` modifiers set when honour allows each (they are
    then left out too; else they all stay).  subst: the constants
    written for variables (see _constants)."""
    subst = subst or {}
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
    datas: list[tuple[int, int, int]] = []  # with data...: (with, as, end)
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
            datas.append((w, as_, stop))
            continue  # with data.x as ...: see below
        parts, dynamic, after = _ref_parts(toks, w + 1, as_)
        if dynamic or after != as_:
            return None
        if not (
            (stop == as_ + 2 and as_ + 1 in subst)
            or _ground(toks[as_ + 1 : stop])
        ):
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
    patch = data_patch(toks, datas, subst, honour)
    if patch:
        cut += [(w, stop) for w, _, stop in datas]
    term = None
    if whole is not None:
        term = _source(toks, text, subst, *whole)
    elif paths:
        term = _input_term(
            [(k, _source(toks, text, subst, s, e)) for k, s, e in paths]
        )
        if term is None:
            return None
    edits = [(toks[w - 1].end, toks[stop - 1].end, '') for w, stop in cut]
    edits += [
        (toks[k].start, toks[k].end, value)
        for k, value in subst.items()
        if lo <= k < hi and not any(w <= k < stop for w, stop in cut)
    ]
    body = []
    pos = toks[lo].start
    for start, end, repl in sorted(edits):
        body += [text[pos:start], repl]
        pos = end
    body.append(text[pos : toks[hi - 1].end])
    return ''.join(body).rstrip(), term, patch


def _source(
    toks: list[_Tok], text: str, subst: dict[int, str], lo: int, hi: int
) -> str:
    """The source of the term [lo, hi), a variable as its constant."""
    if hi == lo + 1 and lo in subst:
        return subst[lo]
    return text[toks[lo].start : toks[hi - 1].end]


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
    toks: list[_Tok],
    lo: int,
    hi: int,
    known: frozenset[str],
    skip: Container[int] = (),
) -> set[str]:
    """Names in [lo, hi) that may be variables: not rules of the package,
    imports, keywords, fields (x.name), functions called, or the tokens
    in skip (replaced by constants)."""
    names = set()
    for i in range(lo, hi):
        tok = toks[i]
        if tok.kind != 'ident' or tok.text in known or i in skip:
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
