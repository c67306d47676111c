"""What the differential tests share: oslo.policy's side, and inputs.

The converted Rego must decide exactly what oslo.policy decides.  The
reference decision is a real :class:`oslo_policy.policy.Enforcer` built
from the same rule table the converter read; an exception raised by
oslo.policy counts as a deny, as it does in a service.
"""

from __future__ import annotations

import copy
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import probe
from oslo_opa.convert.rules import RuleTable

INPUTS_PER_RULE = 100


def enforcer_for(table: RuleTable) -> oslo_policy.Enforcer:
    """An Enforcer holding exactly table's rules and default rule."""
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, use_conf=False)
    enforcer.set_rules(
        oslo_policy.Rules(table.rules, table.default_rule), use_conf=False
    )
    return enforcer


def oslo_decision(
    enforcer: oslo_policy.Enforcer,
    rule: str,
    creds: dict[str, Any],
    target: dict[str, Any],
) -> bool:
    """What oslo.policy decides; where it raises, that is a deny.

    creds and target are deep-copied: enforce() writes into creds.
    """
    try:
        return bool(
            enforcer.enforce(rule, copy.deepcopy(target), copy.deepcopy(creds))
        )
    except Exception:  # noqa: BLE001 - any raise is a deny
        return False


def rule_inputs(
    table: RuleTable, rule: str, count: int = INPUTS_PER_RULE
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """count (creds, target) pairs for rule, seeded by the rule's name."""
    leaves = probe.collect(table.rules, rule, table.default_rule)
    return probe.InputGenerator(leaves, seed=rule).inputs(count)
