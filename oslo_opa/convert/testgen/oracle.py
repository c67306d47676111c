"""oslo.policy's own decision on each generated input, and on each node
of the rule's tree: what every expectation and case is checked against."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg
from oslo_policy import _checks
from oslo_policy import policy as oslo_policy

from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.syntax import parse_format
from oslo_opa.convert.testgen.leaves import AND, NOT, OR
from oslo_opa.convert.testgen.solver import Solver
from oslo_opa.convert.testgen.targets import Target


def _enforcer(rules: dict[str, Any], default: str | None) -> Any:
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, use_conf=False)
    enforcer.set_rules(oslo_policy.Rules(rules, default), use_conf=False)
    return enforcer


class _FailClosed(_checks.Check):
    """A check whose ``%`` format the converter does not convert, as
    the converted rule decides it (and warns): False while a key is
    missing, else a raise."""

    def __call__(
        self, target: Any, creds: Any, enforcer: Any, current_rule: Any = None
    ) -> bool:
        if any(k not in target for k in parse_format(self.match).keys):
            return False
        raise ValueError(f'{self}: not converted')


class _Guarded(_checks.Check):
    """``rule:`` that raises at once where oslo.policy would recurse
    until RecursionError (a rule reached again while it is evaluated
    recurses forever: the inputs are the same): the same decision, in
    far less time."""

    def __init__(self, kind: str, match: str, oracle: Oracle) -> None:
        super().__init__(kind, match)
        self.oracle = oracle

    def __call__(
        self, target: Any, creds: Any, enforcer: Any, current_rule: Any = None
    ) -> bool:
        name = self.oracle.resolve(self.match)
        if name is None:
            return False  # Rules.__missing__: KeyError, fail closed
        stack = self.oracle.stack
        if name in stack:
            raise RecursionError(f'rule {name!r} reached again')
        stack.append(name)
        try:
            return _checks._check(
                enforcer.rules[name], target, creds, enforcer, current_rule
            )
        finally:
            stack.pop()


class Oracle:
    """oslo.policy's answers on one rule's inputs (a raise is a deny)."""

    def __init__(self, table: RuleTable) -> None:
        self.resolve = Solver(table).resolve
        self.stack: list[str] = []
        rules, closed = {}, {}
        for name, check in table.rules.items():
            rules[name] = self._rewrite(check, False)
            closed[name] = self._rewrite(check, True)
        self.enforcer = _enforcer(rules, table.default_rule)
        self.closed = None
        if any(
            type(n) is _FailClosed
            for check in closed.values()
            for n in _walk(check)
        ):
            self.closed = _enforcer(closed, table.default_rule)

    def _rewrite(self, check: Any, fail_closed: bool) -> Any:
        kind = type(check)
        if kind in (AND, OR):
            return kind([self._rewrite(c, fail_closed) for c in check.rules])
        if kind is NOT:
            return NOT(self._rewrite(check.rule, fail_closed))
        if kind is _checks.RuleCheck:
            return _Guarded(check.kind, check.match, self)
        if (
            fail_closed
            and kind in (_checks.RoleCheck, _checks.GenericCheck)
            and parse_format(check.match).unsupported is not None
        ):
            return _FailClosed(check.kind, check.match)
        return check

    def agrees(self, rule: str, doc: dict) -> bool:
        """Whether the converted rule must decide doc as oslo.policy
        does: not where a check it warned about (a ``%`` format it does
        not convert, and denies on) decides otherwise."""
        if self.closed is None:
            return True
        return self.decide(rule, doc) == self._decide(self.closed, rule, doc)

    def decide(self, rule: str, doc: dict) -> bool:
        return self._decide(self.enforcer, rule, doc)

    def _decide(self, enforcer: Any, rule: str, doc: dict) -> bool:
        self.stack[:] = [rule]
        try:
            return bool(
                enforcer.enforce(
                    rule,
                    copy.deepcopy(doc['target']),
                    copy.deepcopy(doc['credentials']),
                )
            )
        except Exception:  # noqa: BLE001 - oslo.policy raising denies
            return False

    def state(self, check: Any, rule: str, doc: dict) -> str:
        """'t', 'f' or 'e' for one node of the rule's tree on doc."""
        self.stack[:] = [rule]
        try:
            # Checks only read (unlike enforce(), which writes creds).
            ok = check(doc['target'], doc['credentials'], self.enforcer, rule)
        except Exception:  # noqa: BLE001 - oslo.policy raising
            return 'e'
        return 't' if ok else 'f'

    def holds(self, t: Target, rule: str, doc: dict) -> bool:
        if t.decision_only:
            return self.decide(rule, doc) is t.constraints[0][1]
        return all(
            self.state(c, rule, doc) == ('t' if want else 'f')
            for c, want in t.constraints
        )


def _walk(check: Any) -> Iterator[Any]:
    yield check
    if type(check) in (AND, OR):
        for sub in check.rules:
            yield from _walk(sub)
    elif type(check) is NOT:
        yield from _walk(check.rule)
