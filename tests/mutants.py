"""Mutated converted rules, to show the generated tests catch them.

A mutant changes one thing in one rule's own check string: drops an
``or`` alternative, replaces a role with another, or changes a literal
(a compared constant, a Python literal, a credential name or a target
key).  (Not a ``rule:`` reference: the generated tests take referenced
rules as a whole, and each has tests of its own.)  It is compiled
by the converter itself, so the module's boolean fast path and its
three-valued ``state`` always change together (a hand edit of one of
them could be invisible on some inputs).

:func:`namespaced` moves a mutant, and a copy of the rule's generated
tests, under a package root of its own (``mutant_<n>.<package>``) so
that one ``opa test`` run covers many mutants next to the original
policy; the mutant still reads the original rules it references.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import re
from collections.abc import Iterator
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert import compile as compile_mod
from oslo_opa.convert import emit, testgen
from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.syntax import parse_format

_AND, _OR, _NOT = _checks.AndCheck, _checks.OrCheck, _checks.NotCheck


@dataclasses.dataclass
class Mutant:
    rule: str
    kind: str  # drop_branch, flip_role, change_literal
    description: str
    tree: _checks.BaseCheck


def _nodes(
    check: Any, path: tuple[int, ...] = ()
) -> Iterator[tuple[tuple[int, ...], Any]]:
    yield path, check
    if type(check) in (_AND, _OR):
        for i, sub in enumerate(check.rules):
            yield from _nodes(sub, path + (i,))
    elif type(check) is _NOT:
        yield from _nodes(check.rule, path + (0,))


def _replace(check: Any, path: tuple[int, ...], new: Any) -> Any:
    """A copy of check with the node at path replaced by new."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if type(check) is _NOT:
        return _NOT(_replace(check.rule, rest, new))
    subs = list(check.rules)
    subs[head] = _replace(subs[head], rest, new)
    return type(check)(subs)


def _other_literal(kind: str) -> str | None:
    try:
        value = ast.literal_eval(kind)
    except Exception:  # noqa: BLE001 - not a literal: a credential path
        return None
    # None -> 'None' compares the same (str() of both is "None"): one
    # equivalent mutant, on purpose.
    return {True: 'False', False: 'True', None: "'None'"}.get(
        value, repr(str(value) + 'x')
    )


def mutants(table: RuleTable, name: str) -> list[Mutant]:
    """Every single-change mutant of rule name's own check string."""
    root = table.rules[name]
    roles = sorted(
        {
            n.match.lower()
            for check in table.rules.values()
            for _, n in _nodes(check)
            if type(n) is _checks.RoleCheck
            and parse_format(n.match).static is not None
        }
        | {'admin', 'member'}
    )

    out: list[Mutant] = []

    def add(kind: str, what: str, path: tuple[int, ...], new: Any) -> None:
        out.append(Mutant(name, kind, what, _replace(root, path, new)))

    for path, node in _nodes(root):
        kind = type(node)
        if kind is _OR:
            for i, sub in enumerate(node.rules):
                rest = [s for j, s in enumerate(node.rules) if j != i]
                new = rest[0] if len(rest) == 1 else _OR(rest)
                add('drop_branch', f'drop {sub}', path, new)
        elif kind is _checks.RoleCheck:
            if parse_format(node.match).static is None:
                continue
            other = next(r for r in roles if r != node.match.lower())
            add(
                'flip_role',
                f'{node} -> role:{other}',
                path,
                _checks.RoleCheck('role', other),
            )
        elif kind is _checks.GenericCheck:
            fmt = parse_format(node.match)
            literal = _other_literal(node.kind)
            if literal is not None:
                new_kind, new_match = literal, node.match
            elif fmt.static is not None:
                new_kind = node.kind
                new_match = {'True': 'False', 'False': 'True'}.get(
                    fmt.static, fmt.static + 'x'
                )
            else:
                # The credential compared with a target value.
                new_kind, new_match = node.kind + 'x', node.match
            add(
                'change_literal',
                f'{node} -> {new_kind}:{new_match}',
                path,
                _checks.GenericCheck(new_kind, new_match),
            )
            if fmt.keys:
                key = fmt.keys[0]
                renamed = node.match.replace(f'%({key})s', f'%({key}x)s')
                add(
                    'change_literal',
                    f'{node} -> {node.kind}:{renamed}',
                    path,
                    _checks.GenericCheck(node.kind, renamed),
                )
    return out


def sample(
    table: RuleTable, per_rule: int, seed: str, rules: list[str] | None = None
) -> list[Mutant]:
    """Up to per_rule mutants of each rule, chosen reproducibly."""
    rng = random.Random(seed)
    out = []
    for name in rules or table.rules:
        found = mutants(table, name)
        rng.shuffle(found)
        out += found[:per_rule]
    return out


class Compiler:
    """Compiles mutated trees of one table's rules, quickly (the table
    is compiled once; only the mutated rule is compiled again)."""

    def __init__(self, table: RuleTable, prefix: str) -> None:
        self.table = dataclasses.replace(table, rules=dict(table.rules))
        self.tc = compile_mod._TableCompiler(self.table, prefix)

    def compile(self, mutant: Mutant) -> compile_mod.CompiledRule:
        saved = self.table.rules[mutant.rule]
        self.table.rules[mutant.rule] = mutant.tree
        try:
            return self.tc.compile_rule(mutant.rule)
        finally:
            self.table.rules[mutant.rule] = saved


def module_files(rule: compile_mod.CompiledRule) -> dict[str, str]:
    """A compiled rule's files: path relative to the output dir -> text
    (the module, and its fast path where that is a file of its own)."""
    files = {emit.module_path(rule.package): rule.module}
    fast = getattr(rule, 'fast_module', None)
    if fast is not None:
        files[emit.fast_module_path(rule.package)] = fast
    return files


def namespaced(
    root: str,
    rule: compile_mod.CompiledRule,
    tests: testgen.RuleTests,
) -> dict[str, str]:
    """The mutant's modules and the rule's tests under package root."""
    out = {}
    for rel, text in module_files(rule).items():
        out[f'{root}/{rel}'] = _repackage(text, rule.package, root)
    text = _repackage(tests.render(), tests.package, root)
    text = text.replace(
        f'import data.{rule.package} as ',
        f'import data.{root}.{rule.package} as ',
    )
    out[f'{root}/{tests.path}'] = text
    return out


def _repackage(text: str, package: str, root: str) -> str:
    new, n = re.subn(
        rf'^package {re.escape(package)}$',
        f'package {root}.{package}',
        text,
        count=1,
        flags=re.M,
    )
    assert n == 1, f'no package {package} line'
    return new
