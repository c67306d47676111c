"""Truth values of a rule's leaf checks that give its nodes the truth
values a case asks for; and the rules whose structure alone decides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.testgen.leaves import AND, NOT, OR, leaf_of

# Bounds on the search for one case's input, so that a rule whose
# structure has no solution costs little.
MAX_STEPS = 4000


Goal = tuple[_checks.BaseCheck, bool, tuple[str, ...]]


class Solver:
    """Truth values for leaves that give nodes the truth values asked.

    Yields assignments {leaf identity: (leaf, truth)}; ``and``/``or``
    choices are tried depth first, those a leaf already decided first.
    """

    def __init__(self, table: RuleTable) -> None:
        self.rules = table.rules
        self.default = table.default_rule
        self.steps = 0
        # Whether the last search was cut short, or met a check that may
        # raise: then finding nothing proves nothing.
        self.incomplete = False

    def resolve(self, ref: str) -> str | None:
        if ref in self.rules:
            return ref
        if self.default and self.default in self.rules:
            return self.default
        return None

    def solve(self, goals: list[Goal]) -> Iterator[dict[Any, Any]]:
        self.steps = 0
        self.incomplete = False
        yield from self._solve(list(goals), [], {})

    def _solve(
        self, pending: list[Goal], choices: list[Goal], assign: dict
    ) -> Iterator[dict[Any, Any]]:
        while True:
            if self.steps > MAX_STEPS:
                self.incomplete = True
                return
            self.steps += 1
            if not pending:
                if not choices:
                    yield assign
                    return
                # Decide a choice only once every forced leaf is known.
                check, want, stack = choices[0]
                for option in self._options(check, want, stack, assign):
                    yield from self._solve(
                        [option], list(choices[1:]), dict(assign)
                    )
                return
            check, want, stack = pending.pop()
            kind = type(check)
            if kind is _checks.TrueCheck or kind is _checks.FalseCheck:
                if want != (kind is _checks.TrueCheck):
                    return
            elif kind is NOT:
                pending.append((check.rule, not want, stack))
            elif kind is _checks.RuleCheck:
                name = self.resolve(check.match)
                if name is None or name in stack:
                    # Missing: False; a cycle: oslo.policy raises.
                    self.incomplete |= name is not None
                    if want:
                        return
                    continue
                pending.append((self.rules[name], want, stack + (name,)))
            elif kind in (AND, OR):
                if (kind is AND) == want:
                    pending.extend((c, want, stack) for c in check.rules)
                else:
                    choices.append((check, want, stack))
            else:
                ident, leaf = leaf_of(check)
                if isinstance(leaf, bool) or leaf.kind == 'raise':
                    # (A check that raises fails when a key is missing.)
                    self.incomplete |= not isinstance(leaf, bool)
                    if leaf is not want:
                        return
                    continue
                seen = assign.get(ident)
                if seen is not None and seen[1] != want:
                    return
                assign[ident] = (leaf, want)

    def _options(
        self, check: Any, want: bool, stack: tuple[str, ...], assign: dict
    ) -> list[Goal]:
        def rank(child: Any) -> int:
            if type(child) in (_checks.RoleCheck, _checks.GenericCheck):
                seen = assign.get(leaf_of(child)[0])
                if seen is not None:
                    return 0 if seen[1] == want else 3
                return 1
            return 2

        kids = sorted(check.rules, key=rank)
        return [(c, want, stack) for c in kids]


def constant(table: RuleTable, name: str) -> bool | None:
    """True or False when rule name decides the same on every input by
    its structure alone (``@``, ``!``, ``rule:`` to such a rule,
    ``is_admin:True or @``, ...), else None.  A rule with no allowing
    (or no denying) test should be one of these.

    Exact about raising: in ``role:x or @`` the role check raises on
    some inputs before ``@`` is reached, so that rule can deny.
    """
    solver = Solver(table)

    def fold(check: Any, stack: tuple[str, ...]) -> tuple[bool | None, bool]:
        """(the constant value or None, whether it may raise)."""
        kind = type(check)
        if kind is _checks.TrueCheck or kind is _checks.FalseCheck:
            return kind is _checks.TrueCheck, False
        if kind is NOT:
            value, raises = fold(check.rule, stack)
            return (None if value is None else not value), raises
        if kind in (AND, OR):
            decisive = kind is OR
            raises = False
            undecided = False
            for sub in check.rules:
                value, sub_raises = fold(sub, stack)
                if value is decisive:
                    # Reached only when nothing before it raised.
                    return (None, True) if raises else (decisive, False)
                if value is None:
                    undecided = True
                    raises |= sub_raises
            return (None, raises) if undecided else (not decisive, False)
        if kind is _checks.RuleCheck:
            ref = solver.resolve(check.match)
            if ref is None:
                return False, False
            if ref in stack:
                return None, True  # a cycle raises once reached
            return fold(table.rules[ref], stack + (ref,))
        leaf = leaf_of(check)[1]
        if isinstance(leaf, bool):
            return leaf, False
        # Role checks raise on roles that are not strings; a path walks
        # into a non-dict; a format the converter does not convert.
        return None, (
            leaf.kind in ('role', 'raise')
            or (leaf.kind == 'path' and len(leaf.path) > 1)
        )

    return fold(table.rules[name], (name,))[0]
