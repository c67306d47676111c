"""Prove a migration: oslo.policy against the Rego, rule by rule.

``oslo-opa verify`` takes the original inputs (policy files, namespaces,
a config file), builds the rule table oslo.policy enforces, generates
inputs for every rule (:mod:`oslo_opa.probe`), and compares oslo.policy's
decision with the converted directory's.  The directory may hold
hand-edited Rego: verify then shows what the edit changed.  Each rule
that differs is reported with the smallest differing input found (keys
and list items removed while the difference stays).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import inputs, probe
from oslo_opa.convert.rules import RuleTable

Decide = Callable[[str, dict, dict], bool]


@dataclasses.dataclass
class Difference:
    """One rule on which the Rego and oslo.policy disagree."""

    rule: str
    creds: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    oslo_policy: bool | None = None
    rego: bool | None = None
    reason: str = ''

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    """What verify found."""

    rules: int
    decisions: int
    differences: list[Difference]


def oslo_policy_decider(table: RuleTable) -> Decide:
    """oslo.policy's decision for the table (a raise is a deny)."""
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, use_conf=False)
    enforcer.set_rules(
        oslo_policy.Rules(table.rules, table.default_rule), use_conf=False
    )

    def decide(rule: str, creds: dict, target: dict) -> bool:
        try:
            return bool(
                enforcer.enforce(
                    rule, copy.deepcopy(target), copy.deepcopy(creds)
                )
            )
        except Exception:  # noqa: BLE001 - oslo.policy raising denies
            return False

    return decide


def rego_decider(directory: str) -> tuple[Decide, set[str]]:
    """The converted directory's decision, and the rules it has."""
    from oslo_opa.engine import EvaluationError, RegoPolicy

    policy = RegoPolicy(directory)

    def decide(rule: str, creds: dict, target: dict) -> bool:
        try:
            return policy.evaluate(
                rule, inputs.build_input(creds, target, rule)
            )
        except (EvaluationError, inputs.UnrepresentableInput):
            return False

    return decide, set(policy.manifest.rules)


class OpaDecider:
    """Decisions of a running OPA, through the http driver.

    DIRECTORY's manifest maps rules to OPA's paths (and what each rule
    reads); the policy itself is whatever that OPA holds.  A decision
    OPA does not give (unreachable, undefined, an error) is a deny, as
    the driver's default failure mode makes it, and is counted: a
    verification where OPA answered nothing is no verification.
    """

    def __init__(self, directory: str, url: str) -> None:
        from oslo_opa.drivers.base import Settings
        from oslo_opa.drivers.http import HttpDriver

        self.driver = HttpDriver(
            Settings(
                rego_path=directory,
                reload_interval=0.0,
                options={'opa_url': url, 'opa_warm_up': False},
            )
        )
        self.answered = 0
        self.unanswered = 0
        self.last_error = ''

    @property
    def rules(self) -> set[str]:
        manifest = self.driver.manifest
        return set(manifest.rules) if manifest is not None else set()

    def __call__(self, rule: str, creds: dict, target: dict) -> bool:
        from oslo_opa.drivers.base import DecisionError

        try:
            doc = self.driver.input_for(rule, creds, target)
            allowed = self.driver.decide(rule, doc)
        except DecisionError as e:
            self.unanswered += 1
            self.last_error = str(e)
            return False
        self.answered += 1
        return allowed

    def close(self) -> None:
        self.driver.close()


def _smaller(creds: dict, target: dict):
    """Candidates one step smaller: a key or a list item removed."""
    for which, doc in (('creds', creds), ('target', target)):
        for key in list(doc):
            smaller = {k: v for k, v in doc.items() if k != key}
            yield (smaller, target) if which == 'creds' else (creds, smaller)
            value = doc[key]
            if isinstance(value, list) and len(value) > 1:
                for i in range(len(value)):
                    trimmed = dict(doc)
                    trimmed[key] = value[:i] + value[i + 1 :]
                    yield (
                        (trimmed, target)
                        if which == 'creds'
                        else (creds, trimmed)
                    )


def shrink(rule: str, creds: dict, target: dict, differs) -> tuple:
    """Greedily remove what the difference does not need."""
    changed = True
    while changed:
        changed = False
        for c, t in _smaller(creds, target):
            if differs(rule, c, t):
                creds, target, changed = c, t, True
                break
    return creds, target


def verify(
    table: RuleTable,
    decide: Decide,
    available: set[str],
    per_rule: int = 100,
    seed: int | str = 0,
) -> Report:
    """Compare oslo.policy's decisions on table with decide's."""
    expected = oslo_policy_decider(table)
    differences = []
    decisions = 0

    def differs(rule, creds, target):
        return expected(rule, creds, target) != decide(rule, creds, target)

    for rule in table.rules:
        if rule not in available:
            differences.append(
                Difference(rule, reason='not in the converted policy')
            )
            continue
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'{seed}:{rule}')
        for creds, target in gen.inputs(per_rule):
            decisions += 1
            if differs(rule, creds, target):
                creds, target = shrink(rule, creds, target, differs)
                differences.append(
                    Difference(
                        rule,
                        creds,
                        target,
                        expected(rule, creds, target),
                        decide(rule, creds, target),
                        'decisions differ',
                    )
                )
                break
    return Report(len(table.rules), decisions, differences)
