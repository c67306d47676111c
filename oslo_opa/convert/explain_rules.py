"""Per-node Rego for explaining a converted rule (``oslo_opa.explain``).

A converted rule's ``state`` is one Rego expression, built bottom-up by
the converter (``compile.py``) from the rule's check tree: every node of
the tree (``and``, ``or``, ``not``, ``rule:``, each check) becomes a
sub-expression of it.  To explain a decision, each of those
sub-expressions is evaluated on its own, in the rule's package and on
the same input: Rego is pure and the library's functions are total, so
each evaluates to exactly what it contributes to ``state``.

The sub-expressions come from the SAME compiler, run again on the
manifest's check string with every node's output recorded.  That is the
Rego in force only if the module is as the converter wrote it (the
caller checks the manifest's hashes) and if this converter writes the
same ``state`` line and reads the same rules from that check string
(checked here: :func:`plan` refuses otherwise).  Nothing here is ever
compiled into a decision bundle: explaining builds bundles of its own.

Everything a policy says reaches the Rego through the compiler's own
functions (``syntax.rego_string``), so the module is as data-safe as the
converted one.
"""

from __future__ import annotations

import dataclasses
import re

from oslo_policy import _checks

from oslo_opa.convert import compile as compile_mod
from oslo_opa.convert.rules import RuleTable

# The rule each explain module defines, in the explained rule's package;
# the converter never writes a name starting with _explain.
ENTRY = '_explain'
_PACKAGE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
_RULE_REF = re.compile(r'_rule([0-9]+)')

_KINDS = {
    _checks.AndCheck: 'and',
    _checks.OrCheck: 'or',
    _checks.NotCheck: 'not',
    _checks.RuleCheck: 'rule',
}


@dataclasses.dataclass
class Node:
    """One node of a rule's check tree, and where its value is.

    :ivar kind: ``and``, ``or``, ``not``, ``rule`` or ``check``.
    :ivar text: the node as oslo.policy prints it.
    :ivar check: the parsed check.
    :ivar index: its position in the package's ``_explain.nodes``.
    :ivar children: its operands; for a ``rule:`` of the same reference
        cycle, the referenced rule's tree (the converter inlines it).
    :ivar reads: for a ``rule:`` read as another package's decision
        (``_ruleN``), the rule it reads.
    :ivar note: why a ``rule:`` has neither (undefined, a cycle).
    """

    kind: str
    text: str
    check: _checks.BaseCheck
    index: int
    children: list[Node] = dataclasses.field(default_factory=list)
    reads: str | None = None
    note: str | None = None


@dataclasses.dataclass
class Plan:
    """How to explain one rule: its tree and its explain module."""

    rule: str
    package: str
    tree: Node
    module: str
    # Whether the module can ask the overlay hooks (_denied, _granted).
    hooks: bool


class _Recorder(compile_mod._RuleCompiler):
    """The converter's rule compiler, recording every node it compiles."""

    def __init__(self, conv: compile_mod._TableCompiler, name: str) -> None:
        super().__init__(conv, name)
        self.exprs: list[str] = []
        self._siblings: list[Node] = []

    def compile(self, check: _checks.BaseCheck, stack: tuple[str, ...]) -> str:
        node = Node(
            kind=_KINDS.get(type(check), 'check'),
            text=compile_mod._check_str(check) or '@',
            check=check,
            index=len(self.exprs),
        )
        self.exprs.append('')
        self._siblings.append(node)
        outer, self._siblings = self._siblings, node.children
        try:
            expr = super().compile(check, stack)
        finally:
            self._siblings = outer
        self.exprs[node.index] = expr
        if node.kind == 'rule' and not node.children:
            self._reference(node, expr)
        return expr

    def _reference(self, node: Node, expr: str) -> None:
        found = _RULE_REF.fullmatch(expr)
        if found is not None:
            node.reads = self.deps[int(found.group(1)) - 1]
        elif expr == '"e"':
            node.note = 'a reference cycle: oslo.policy raises here'
        else:
            node.note = 'no such rule and no default rule: False'


class ExplainCompiler:
    """Compiles explain modules for the rules of one manifest.

    :param check_strs: every rule's check string, in the manifest's order.
    :param default_rule: the manifest's default rule.
    :param prefix: its package prefix.
    """

    def __init__(
        self, check_strs: dict[str, str], default_rule: str | None, prefix: str
    ) -> None:
        table = RuleTable.from_strings(check_strs, default_rule)
        self._tc = compile_mod._TableCompiler(table, prefix)

    def plan(
        self,
        rule: str,
        package: str,
        module: str,
        deps: tuple[str, ...],
        hooks: bool,
    ) -> Plan | None:
        """rule's plan, or None when the compiler does not write module's
        own ``state`` line and references from its check string (then
        its nodes' Rego is not known to be the Rego in force)."""
        if not _PACKAGE.fullmatch(package):
            return None
        if self._tc.packages.get(rule) != package:
            return None
        rc = _Recorder(self._tc, rule)
        try:
            state = rc.compile(self._tc.table.rules[rule], (rule,))
        except Exception:  # noqa: BLE001 - not explainable, not fatal
            return None
        if f'state := {state}' not in module.splitlines():
            return None
        if tuple(rc.deps) != tuple(deps):
            return None
        return Plan(
            rule=rule,
            package=package,
            tree=rc._siblings[0],
            module=_module(package, rc.exprs, hooks),
            hooks=hooks,
        )


def _module(package: str, exprs: list[str], hooks: bool) -> str:
    """The explain module: every node's value, the overlay hooks' and
    the decision's, in one object (one query per rule); as opa fmt
    writes it."""
    lines = [
        '# Explains a converted rule: each node of its check tree.',
        f'package {package}',
        '',
        'import data.oslo_opa.lib',
        '',
        f'{ENTRY} := {{',
        '\t"nodes": [',
        *(f'\t\t{e},' for e in exprs),
        '\t],',
        '\t"allow": allow,',
        '\t"error": error,',
        f'\t"denied": {ENTRY}_denied,',
        f'\t"granted": {ENTRY}_granted,',
        '}',
        '',
        # _denied and _granted are undefined when false.
        f'default {ENTRY}_denied := false',
        '',
        f'default {ENTRY}_granted := false',
        '',
    ]
    if hooks:
        lines += [
            f'{ENTRY}_denied if _denied',
            '',
            f'{ENTRY}_granted if _granted',
            '',
        ]
    return '\n'.join(lines)


def entrypoint(package: str) -> str:
    """The bundle entry point of package's explain object."""
    return package.replace('.', '/') + '/' + ENTRY
