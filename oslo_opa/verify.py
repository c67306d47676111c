"""Prove a migration: oslo.policy against the Rego, rule by rule.

``oslo-opa verify`` takes the original inputs (policy files, namespaces,
a config file), builds the rule table oslo.policy enforces, generates
inputs for every rule (:mod:`oslo_opa.probe`), and compares oslo.policy's
decision with the converted directory's.  The directory may hold
hand-edited Rego: verify then shows what the edit changed.  Each rule
that differs is reported with the smallest differing input found (keys
and list items removed while the difference stays).

With overlays, a difference an overlay's deny or grant accounts for is
not a defect but what the overlay is for: such decisions are counted
by overlay reason (:class:`Change`), each with an example input, and
inputs are also drawn from what the overlays compare (their strings,
the data's, the keys they read).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import inputs, probe
from oslo_opa.convert.rules import RuleTable
from oslo_opa.errors import OsloOpaError

Decide = Callable[[str, dict, dict], bool]
# (rule, creds, target) -> kind ("deny", "grant") -> overlay key -> reasons
Explain = Callable[[str, dict, dict], dict[str, dict[str, list[str]]]]


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
class Change:
    """The decisions one overlay reason changed.

    :ivar kind: ``deny`` or ``grant``.
    :ivar key: the overlay's key: a rule name or ``"*"``.
    :ivar reason: the reason it gave.
    :ivar decisions: how many compared decisions it changed.
    :ivar rules: the rules whose decisions it changed.
    :ivar example: the smallest input found, as a Difference.
    """

    kind: str
    key: str
    reason: str
    decisions: int = 0
    rules: list[str] = dataclasses.field(default_factory=list)
    example: Difference | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    """What verify found: differences no overlay accounts for, and the
    changes overlays make."""

    rules: int
    decisions: int
    differences: list[Difference]
    changes: list[Change] = dataclasses.field(default_factory=list)


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


def rego_decider(
    directory: str, policy: Any = None
) -> tuple[Decide, set[str]]:
    """The converted directory's decision (policy: its RegoPolicy, with
    overlays and data, if already loaded), and the rules it has."""
    from oslo_opa.engine import EvaluationError, RegoPolicy

    if policy is None:
        policy = RegoPolicy(directory)

    def decide(rule: str, creds: dict, target: dict) -> bool:
        try:
            creds = inputs.credentials_dict(creds)
            return policy.evaluate(rule, policy.input_for(rule, creds, target))
        except (EvaluationError, inputs.UnrepresentableInput):
            return False

    return decide, set(policy.manifest.rules)


def rego_explainer(policy: Any) -> Explain:
    """The overlays' reasons on an input, from a RegoPolicy."""
    from oslo_opa.engine import EvaluationError

    def explain(rule: str, creds: dict, target: dict) -> dict:
        try:
            doc = inputs.build_input(creds, target, rule)
            return policy.overlay_reasons(rule, doc)
        except (EvaluationError, inputs.UnrepresentableInput):
            return {'deny': {}, 'grant': {}}

    return explain


def causes(
    rule: str, found: dict[str, dict[str, list[str]]], allowed: bool
) -> list[tuple[str, str, str]]:
    """The (kind, key, reason) of the overlays that account for rule's
    decision: its own deny (or grant, when it allows); else those on the
    rules it reads."""
    kind = 'grant' if allowed else 'deny'
    own = [(kind, k) for k in (rule, '*') if k in found.get(kind, {})]
    if not own:
        own = [
            (kind, k)
            for kind in ('deny', 'grant')
            for k in found.get(kind, {})
            if k not in (rule, '*')
        ]
    return [(kind, k, r) for kind, k in own for r in found[kind][k]]


class OpaDecider:
    """Decisions of a running OPA, through the http driver.

    DIRECTORY's manifest maps rules to OPA's paths (and what each rule
    reads); the policy itself is whatever that OPA holds.  A decision
    OPA does not give (unreachable, undefined, an error) is a deny, as
    the driver's default failure mode makes it, and is counted: a
    verification where OPA answered nothing is no verification.
    """

    def __init__(
        self, directory: str, url: str, overlay_path: Sequence[str] = ()
    ) -> None:
        from oslo_opa.drivers.base import Settings
        from oslo_opa.drivers.http import HttpDriver

        self.driver = HttpDriver(
            Settings(
                rego_path=directory,
                overlay_path=tuple(overlay_path),
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

    def explain(self, rule: str, creds: dict, target: dict) -> dict:
        """The overlays' reasons OPA gives on this input (its
        ``data.oslo_opa.overlay`` for the whole input)."""
        found: dict[str, dict[str, list[str]]] = {'deny': {}, 'grant': {}}
        try:
            doc = inputs.build_input(creds, target, rule)
            body = json.dumps({'input': doc}).encode('utf-8')
            status, data = self.driver.transport.request(
                'POST', '/v1/data/oslo_opa/overlay', body
            )
            result = json.loads(data).get('result') if status == 200 else None
        except (OsloOpaError, ValueError, AttributeError):
            return found
        for kind in found:
            value = result.get(kind) if isinstance(result, dict) else None
            if isinstance(value, dict):
                found[kind] = {
                    k: sorted(str(r) for r in v)
                    for k, v in value.items()
                    if isinstance(v, list) and v
                }
        return found

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
    explain: Explain | None = None,
    vocabulary: probe.Vocabulary | None = None,
    tried: Sequence[tuple[dict, dict]] = (),
) -> Report:
    """Compare oslo.policy's decisions on table with decide's.

    :param explain: with overlays, their reasons on an input: the
        differences they account for are counted as changes.
    :param vocabulary: what else the inputs should try (see probe).
    :param tried: (creds, target) pairs to try on every rule first (the
        inputs of the overlays' own tests).
    """
    expected = oslo_policy_decider(table)
    differences = []
    changes: dict[tuple[str, str, str], Change] = {}
    decisions = 0

    def differs(rule, creds, target):
        return expected(rule, creds, target) != decide(rule, creds, target)

    def explained(rule, creds, target) -> list[tuple[str, str, str]]:
        if explain is None:
            return []
        found = explain(rule, creds, target)
        return causes(rule, found, decide(rule, creds, target))

    for rule in table.rules:
        if rule not in available:
            differences.append(
                Difference(rule, reason='not in the converted policy')
            )
            continue
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(
            leaves, seed=f'{seed}:{rule}', vocabulary=vocabulary
        )
        for creds, target in [*tried, *gen.inputs(per_rule)]:
            decisions += 1
            if not differs(rule, creds, target):
                continue
            found = explained(rule, creds, target)
            for cause in found:
                change = changes.setdefault(cause, Change(*cause))
                change.decisions += 1
                if rule not in change.rules:
                    change.rules.append(rule)
                if change.example is None:
                    change.example = _example(
                        rule,
                        creds,
                        target,
                        expected,
                        decide,
                        lambda r, c, t, k=cause: (
                            differs(r, c, t) and k in explained(r, c, t)
                        ),
                    )
            if found:
                continue
            differences.append(
                _example(rule, creds, target, expected, decide, differs)
            )
            break
    return Report(
        len(table.rules), decisions, differences, list(changes.values())
    )


def _example(
    rule: str,
    creds: dict,
    target: dict,
    expected: Decide,
    decide: Decide,
    keep: Callable[[str, dict, dict], bool],
) -> Difference:
    """The smallest input keep still holds for, as a Difference."""
    creds, target = shrink(rule, creds, target, keep)
    return Difference(
        rule,
        creds,
        target,
        expected(rule, creds, target),
        decide(rule, creds, target),
        'decisions differ',
    )


def vocabulary(overlays: Any, data: Any) -> probe.Vocabulary:
    """What the overlays and the data make worth trying."""
    words = list(overlays.strings) if overlays else []
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            words.append(value)
        elif isinstance(value, dict):
            words += [k for k in value if isinstance(k, str)]
            stack += list(value.values())
        elif isinstance(value, list):
            stack += value
    return probe.Vocabulary(
        strings=tuple(dict.fromkeys(words)),
        credentials=tuple(overlays.credentials) if overlays else (),
        target_keys=tuple(overlays.target_keys) if overlays else (),
    )
