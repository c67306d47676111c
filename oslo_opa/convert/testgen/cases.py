"""Every case of every rule: those its structure asks for, then the
variants of allowing inputs (roles with their case changed, a target key
removed, roles that make oslo.policy raise); each named and checked
against oslo.policy before it becomes a test."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert.compile import CompiledRule, Conversion
from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.syntax import comment, parse_format
from oslo_opa.convert.testgen.leaves import AND, NOT, OR
from oslo_opa.convert.testgen.oracle import Oracle
from oslo_opa.convert.testgen.render import Case, RuleTests
from oslo_opa.convert.testgen.search import InputSearch
from oslo_opa.convert.testgen.solver import Solver
from oslo_opa.convert.testgen.targets import (
    Target,
    describe,
    signature,
    targets_of,
    why_not,
)

# Case-changed roles per rule.
MAX_ROLE_CASES = 4


def _key(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True)


_UNSAFE = re.compile(r'[^a-z0-9]+')
_SUBST = re.compile(r'%\((.*?)\)s')


def _slug(text: str, limit: int = 32) -> str:
    """A short identifier-safe echo of policy text, for test names."""
    s = _UNSAFE.sub('_', _SUBST.sub(r'\1', text).lower()).strip('_')
    if len(s) > limit:
        # Cut between words where one is near.
        cut = s.rfind('_', limit // 2, limit + 1)
        s = s[: cut if cut > 0 else limit]
    return s.rstrip('_')


def _is_leaf(check: Any) -> bool:
    return type(check) in (
        _checks.RoleCheck,
        _checks.GenericCheck,
        _checks.RuleCheck,
        _checks.NotCheck,
    )


def _known_roles(table: RuleTable) -> list[str]:
    """Every role the policy names, once, in order."""
    out: dict[str, str] = {}
    stack = list(table.rules.values())
    while stack:
        check = stack.pop(0)
        if type(check) is _checks.RoleCheck:
            fmt = parse_format(check.match)
            if fmt.static is not None:
                out.setdefault(fmt.static.lower(), fmt.static)
        elif type(check) is NOT:
            stack.append(check.rule)
        elif type(check) in (AND, OR):
            stack.extend(check.rules)
    return list(out.values())


def _generate_rule(
    table: RuleTable,
    compiled: CompiledRule,
    oracle: Oracle,
    solver: Solver,
    packages: set[str],
    known_roles: list[str],
) -> RuleTests:
    name = compiled.name
    gen = InputSearch(table, oracle, solver, name, known_roles)
    cases: list[Case] = []
    not_built: list[str] = []
    seen: dict[str, Case] = {}
    names: set[str] = set()

    def add(base: str, note: str, doc: dict) -> Case | None:
        key = _key(doc)
        if key in seen:
            return None
        if not oracle.agrees(name, doc):
            note = (
                'cases where a check the converter warned about (a % '
                'format it does not convert) decides: oslo.policy may '
                'allow, the converted rule denies'
            )
            if note not in not_built:
                not_built.append(note)
            return None
        expected = oracle.decide(name, doc)
        stem = f'test_{"allow" if expected else "deny"}' + (
            f'_{base}' if base else ''
        )
        unique, n = stem, 1
        while unique in names:
            n += 1
            unique = f'{stem}_{n}'
        names.add(unique)
        case = Case(unique, note, doc, expected)
        seen[key] = case
        cases.append(case)
        return case

    tried = set()
    for t in targets_of(gen.root):
        tried.add(signature(t))
        doc = gen.build(t)
        if doc is None:
            not_built.append(why_not(t))
            continue
        parts = list(t.label)
        if t.what == 'none':
            parts.append('no_branch')
        elif t.what == 'all' and not parts:
            parts.append('all_legs')
        if t.what in ('alone', 'false', 'true') and _is_leaf(t.focus):
            parts.append(_slug(str(t.focus)))
        add('_'.join(p for p in parts if p), describe(t), doc)

    # Every rule that can allow (deny) gets a test that allows (denies),
    # even where no single branch is decisive (two equal branches).
    for outcome in (True, False):
        if any(c.expected is outcome for c in cases):
            continue
        t = Target((), [(gen.root, outcome)], gen.root, str(outcome).lower())
        if signature(t) in tried and outcome:
            continue  # the rule is a single check: tried already
        # Denying: oslo.policy raising counts (a reference cycle).
        t.decision_only = True
        doc = gen.build(t)
        if doc is None:
            not_built.append(why_not(t))
        else:
            add('', describe(t), doc)

    allowing = [c for c in cases if c.expected]
    _role_cases(allowing, add)
    _missing_keys(compiled.target_keys, allowing, add, oracle, name, not_built)
    _raising_roles(allowing, add, oracle, name)

    package = f'{compiled.package}_test'
    if package in packages:
        # Another rule's package already has this name.
        digest = hashlib.sha256(name.encode('utf-8', 'surrogatepass'))
        package = f'{compiled.package}_{digest.hexdigest()[:8]}_test'
    return RuleTests(
        rule=name,
        rule_package=compiled.package,
        package=package,
        path=package.replace('.', '/') + '.rego',
        check_str=compiled.check_str,
        cases=cases,
        not_built=not_built,
    )


def _role_cases(allowing: list[Case], add: Any) -> None:
    done: set[str] = set()
    for case in allowing:
        roles = case.creds.get('roles')
        if not isinstance(roles, list):
            continue
        for i, role in enumerate(roles):
            if not isinstance(role, str) or role.lower() in done:
                continue
            if len(done) >= MAX_ROLE_CASES:
                return
            variant = next(
                (
                    v
                    for v in (role.upper(), role.title(), role.swapcase())
                    if v != role and v.lower() == role.lower()
                ),
                None,
            )
            if variant is None:
                continue
            done.add(role.lower())
            doc = copy.deepcopy(case.document)
            doc['credentials']['roles'][i] = variant
            add(
                f'role_case_{_slug(role, 24)}',
                f'roles compare case-insensitively: {comment(role)} sent '
                f'as {comment(variant)} (from {case.name})',
                doc,
            )


def _raising_roles(
    allowing: list[Case], add: Any, oracle: Oracle, rule: str
) -> None:
    """Allowing inputs whose roles hold a non-string, where that denies.

    oslo.policy raises at the first role check it reaches then, so the
    decision shows which checks come before the one that allows; and
    the converted rule decides it with its three-valued state, which
    the other (tidy) inputs never reach.
    """
    for case in allowing:
        if not isinstance(case.creds.get('roles'), list):
            continue
        doc = copy.deepcopy(case.document)
        doc['credentials']['roles'].append(None)
        if oracle.decide(rule, doc):
            continue  # no role check is reached before it allows
        base = case.name.removeprefix('test_allow').lstrip('_')
        add(
            f'{base}_roles_raise'.lstrip('_'),
            f'roles holding null: the first role check reached raises, '
            f'oslo.policy denies (from {case.name})',
            doc,
        )


def _missing_keys(
    keys: list[str],
    allowing: list[Case],
    add: Any,
    oracle: Oracle,
    rule: str,
    not_built: list[str],
) -> None:
    for key in keys:
        having = [c for c in allowing if key in c.target]
        if not having:
            not_built.append(
                f'target key {comment(key)} missing: no allowing input '
                f'reads it'
            )
            continue
        trials = []
        for case in having:
            doc = copy.deepcopy(case.document)
            del doc['target'][key]
            trials.append((case, doc))
        # The removal that changes the decision shows the key is needed.
        case, doc = next(
            ((c, d) for c, d in trials if not oracle.decide(rule, d)),
            trials[0],
        )
        add(
            f'missing_{_slug(key, 40)}',
            f'target key {comment(key)} missing (from {case.name})',
            doc,
        )


def generate(
    table: RuleTable, conv: Conversion, rules: Iterable[str] | None = None
) -> dict[str, RuleTests]:
    """The tests of every rule (or of the rules named) of a conversion
    of table: rule name -> RuleTests."""
    oracle = Oracle(table)
    solver = Solver(table)
    packages = {r.package for r in conv.rules.values()}
    known_roles = _known_roles(table)
    return {
        name: _generate_rule(
            table, conv.rules[name], oracle, solver, packages, known_roles
        )
        for name in (conv.rules if rules is None else rules)
    }
