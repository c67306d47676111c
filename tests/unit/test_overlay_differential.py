"""Overlays against oslo.policy, on the real corpus, in the embedded engine.

An overlay (deny["*"], deny and grant on chosen rules) and the same
customization written in oslo.policy syntax (tests/overlays.py) must
decide alike for every rule of every corpus service, on generated
inputs in every role variant, fast-path and three-valued ones alike,
through the embedded engine as the driver calls it (the input the
policy asks for, then the decision).
"""

from __future__ import annotations

import os

import pytest

from oslo_opa import overlay
from oslo_opa.convert import convert, load_rule_table
from oslo_opa.engine import RegoPolicy
from tests import overlays
from tests.corpus import SERVICES, policy_file
from tests.differential import enforcer_for, oslo_decision

# Generated inputs per rule (each in six role variants).
INPUTS_PER_RULE = 2


@pytest.fixture(scope='module', params=SERVICES)
def service(request, tmp_path_factory):
    name = request.param
    table = load_rule_table(policy_files=[policy_file(name)])
    out = str(tmp_path_factory.mktemp(name) / 'out')
    convert(out, policy_files=[policy_file(name)], tests=False)
    grants, denies = overlays.chosen(table)
    odir = tmp_path_factory.mktemp(f'{name}-overlay')
    (odir / 'overlay.rego').write_text(overlays.overlay_rego(grants, denies))
    policy = RegoPolicy(out, overlays=overlay.load([str(odir)]))
    policy.validate()
    return name, table, policy, grants, denies


def test_overlays_decide_as_the_rewritten_policy(service):
    name, table, policy, grants, denies = service
    assert policy.warnings == []
    expected = enforcer_for(overlays.customized(table, grants, denies))
    plain = enforcer_for(table)
    mismatches = []
    changed = {'deny': 0, 'grant': 0}
    untidy = 0
    for rule in table.rules:
        for creds, target in overlays.inputs_for(table, rule, INPUTS_PER_RULE):
            want = oslo_decision(expected, rule, creds, target)
            doc = policy.input_for(rule, creds, target)
            got = policy.evaluate(rule, doc)
            if got != want:
                mismatches.append((rule, creds, target, want, got))
            before = oslo_decision(plain, rule, creds, target)
            if before != want:
                changed['grant' if want else 'deny'] += 1
            untidy += any(
                isinstance(v, (list, dict)) and k != 'roles'
                for k, v in creds.items()
            )
    assert not mismatches, '\n'.join(
        f'{name} {rule!r}: creds={c!r} target={t!r} oslo.policy={w} rego={g}'
        for rule, c, t, w, g in mismatches[:20]
    )
    # The comparison meant something: the overlays changed decisions
    # both ways, on inputs that leave the fast path too.
    assert changed['deny'] > 0 and changed['grant'] > 0, changed
    assert untidy > 0


def test_harness_detects_an_overlay_that_is_not_applied(tmp_path):
    """Without the overlay, the Rego disagrees with the rewritten table
    (so the comparison above can fail)."""
    table = load_rule_table(policy_files=[policy_file('glance')])
    out = str(tmp_path / 'out')
    convert(out, policy_files=[policy_file('glance')], tests=False)
    grants, denies = overlays.chosen(table)
    expected = enforcer_for(overlays.customized(table, grants, denies))
    policy = RegoPolicy(out)
    differ = 0
    for rule in list(table.rules)[:10]:
        for creds, target in overlays.inputs_for(table, rule, 3):
            doc = policy.input_for(rule, creds, target)
            differ += policy.evaluate(rule, doc) != oslo_decision(
                expected, rule, creds, target
            )
    assert differ > 0


def test_chosen_rules_include_rules_read_by_others():
    table = load_rule_table(policy_files=[policy_file('keystone')])
    grants, denies = overlays.chosen(table)
    assert 'admin_required' in set(grants) | set(denies)
    assert os.path.basename(policy_file('keystone')) == 'keystone.policy.yaml'
