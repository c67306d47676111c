"""Shadow mode: the service gets oslo.policy's decisions, exactly, and
Rego's are compared beside them.

An Enforcer on the delegation file with ``[oslo_opa] mode = shadow``
against one on the original policy file (tests/unit/test_delegation_e2e
builds both), on the corpus' generated inputs in three token scopes,
asked with ``do_raise=True``: every outcome (allow, deny, InvalidScope,
an exception) must be the same, and the comparisons Rego makes aside
must find exactly the rules whose Rego was changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time

import pytest

from oslo_opa import check, cli, probe
from oslo_opa.convert import convert, load_rule_table
from tests import corpus
from tests.unit.test_delegation_e2e import SCOPES, enforcer, outcome

INPUTS_PER_RULE = 4


@pytest.fixture(autouse=True)
def _fresh_deciders():
    yield
    check.reset()


def shadow_enforcer(directory, service, **overrides):
    enf = enforcer(
        os.path.join(directory, 'policy.yaml'), service, rego_path=directory
    )
    enf.conf.set_override('mode', 'shadow', 'oslo_opa')
    for name, value in overrides.items():
        enf.conf.set_override(name, value, 'oslo_opa')
    return enf


def run_both(original, shadowed, table, seed, per_rule=INPUTS_PER_RULE):
    """Outcomes that differ between the two Enforcers, and how many
    requests were made."""
    different = []
    asked = 0
    for rule in table.rules:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'{seed}:{rule}')
        for creds, target in gen.inputs(per_rule):
            for scope in SCOPES:
                c = {**creds, **scope}
                want = outcome(original, rule, c, target)
                got = outcome(shadowed, rule, c, target)
                asked += 1
                if want != got:
                    different.append((rule, c, target, want, got))
    return different, asked


def _flip(directory, rule):
    """Make rule's Rego allow everything (a wrong conversion)."""
    with open(os.path.join(directory, 'manifest.json')) as f:
        module = json.load(f)['rules'][rule]['module']
    path = os.path.join(directory, module)
    with open(path) as f:
        text = f.read()
    assert 'default allow := false' in text
    with open(path, 'w') as f:
        f.write(
            text.replace('default allow := false', 'default allow := true')
        )


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('shadow') / 'keystone')
    convert(out, policy_files=[corpus.policy_file('keystone')])
    return out


CHANGED = 'identity:delete_project'


def test_a_changed_rule_is_reported_and_nothing_else(
    tmp_path, keystone, caplog
):
    out = str(tmp_path / 'keystone')
    shutil.copytree(keystone, out)
    _flip(out, CHANGED)
    original = enforcer(corpus.policy_file('keystone'), 'keystone')
    shadowed = shadow_enforcer(out, 'keystone')
    table = load_rule_table(policy_files=[corpus.policy_file('keystone')])
    with caplog.at_level(logging.WARNING, logger='oslo_opa'):
        different, asked = run_both(original, shadowed, table, 'flip')
        shadow = check.decider_for(shadowed.conf).shadow
        assert shadow.flush(60)
    # The service saw oslo.policy's own outcomes, exceptions included.
    assert not different, different[:5]
    assert shadow.compared > asked // 2
    assert set(shadow.mismatches) == {CHANGED}
    assert not shadow.errors and not sum(shadow.dropped.values())
    lines = [
        r.getMessage() for r in caplog.records if 'shadow' in r.getMessage()
    ]
    # Logged once per input shape, naming the rule and both decisions.
    assert lines and all(CHANGED in line for line in lines)
    assert 'oslo.policy says deny, Rego says allow' in lines[0]
    # With the explanation of Rego's side: here, that it was edited.
    assert 'hand-edited' in lines[0]
    assert len(lines) <= shadow.mismatches[CHANGED]


@pytest.mark.parametrize('service', corpus.SERVICES)
def test_nothing_changed_nothing_reported(tmp_path, service):
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[corpus.policy_file(service)])
    original = enforcer(corpus.policy_file(service), service)
    shadowed = shadow_enforcer(out, service)
    table = load_rule_table(policy_files=[corpus.policy_file(service)])
    different, asked = run_both(original, shadowed, table, service, 2)
    shadow = check.decider_for(shadowed.conf).shadow
    assert shadow.flush(120)
    assert not different, different[:5]
    assert shadow.compared > 0
    assert not shadow.mismatches, dict(shadow.mismatches)
    assert not shadow.errors, dict(shadow.errors)


def test_a_full_queue_drops_and_counts_never_blocks(keystone):
    original = enforcer(corpus.policy_file('keystone'), 'keystone')
    shadowed = shadow_enforcer(keystone, 'keystone', shadow_queue_size=1)
    shadow = check.decider_for(shadowed.conf).shadow
    # Hold the comparison thread: every later decision finds the queue
    # full.
    gate = threading.Event()
    real = shadow._compare_all
    shadow._worker.handle = lambda items: (gate.wait(60), real(items))
    # How long each hand-over to the queue takes: a request's share.
    slowest = [0.0]
    put = shadow._worker.put

    def timed_put(item):
        started = time.perf_counter()
        try:
            return put(item)
        finally:
            slowest[0] = max(slowest[0], time.perf_counter() - started)

    shadow._worker.put = timed_put
    table = load_rule_table(policy_files=[corpus.policy_file('keystone')])
    different, asked = run_both(original, shadowed, table, 'full', 1)
    # The thread is still held: the decisions above never waited for it.
    assert not shadow._worker._idle.is_set()
    assert slowest[0] < 0.05, slowest[0]
    gate.set()
    assert shadow.flush(30)
    assert not different, different[:5]
    assert sum(shadow.dropped.values()) >= asked // 2
    assert shadow.compared + sum(shadow.dropped.values()) <= asked


def test_enforce_mode_is_unchanged(keystone):
    """The default mode has no shadow: Rego decides."""
    enf = enforcer(
        os.path.join(keystone, 'policy.yaml'), 'keystone', rego_path=keystone
    )
    enf.enforce('identity:get_project', {}, {'roles': ['admin']})
    decider = check.decider_for(enf.conf)
    assert decider.shadow is None


def test_shadow_report_lists_the_changed_rule(tmp_path, keystone, capsys):
    out = str(tmp_path / 'keystone')
    shutil.copytree(keystone, out)
    _flip(out, CHANGED)
    log = str(tmp_path / 'decisions.log')
    original = enforcer(corpus.policy_file('keystone'), 'keystone')
    shadowed = shadow_enforcer(out, 'keystone', decision_log_file=log)
    table = load_rule_table(policy_files=[corpus.policy_file('keystone')])
    run_both(original, shadowed, table, 'report', 2)
    decider = check.decider_for(shadowed.conf)
    assert decider.shadow.flush(60) and decider.log.flush(10)
    assert cli.main(['shadow-report', log, '--format', 'json']) == 1
    report = json.loads(capsys.readouterr().out)
    assert [r['rule'] for r in report['rules']] == [CHANGED]
    (found,) = report['rules']
    assert found['mismatches'] == decider.shadow.mismatches[CHANGED]
    assert found['kinds'] == {'deny -> allow': found['mismatches']}
    assert found['example']['input']['rule'] == CHANGED
    assert report['shadow_events'] == decider.shadow.compared
    # The text form names the rule and shows the example.
    assert cli.main(['shadow-report', log]) == 1
    text = capsys.readouterr().out
    assert CHANGED in text and 'for example' in text


def test_shadow_report_without_differences_and_on_bad_files(tmp_path, capsys):
    log = tmp_path / 'decisions.log'
    event = {'oslo_opa': {'rule': 'r', 'shadow': {'match': True, 'rego': 1}}}
    log.write_text(json.dumps(event) + '\nnot json\n')
    assert cli.main(['shadow-report', str(log)]) == 0
    assert '0 differed' in capsys.readouterr().out
    assert cli.main(['shadow-report', str(tmp_path / 'absent.log')]) == 2
    err = capsys.readouterr().err
    assert 'absent.log' in err and 'Traceback' not in err


def test_shadow_with_an_overlay_reports_what_the_overlay_changes(
    tmp_path, caplog
):
    """Rego's side includes the overlays: where one denies, shadow mode
    shows the difference it would make, and the service still gets
    oslo.policy's decision."""
    from tests import policies

    out = policies.converted(str(tmp_path), policies.THINGS)
    overlays = tmp_path / 'overlays'
    overlays.mkdir()
    (overlays / 'freeze.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["delete_thing"] contains "frozen" if {\n'
        '\tinput.target.project_id == "frozen"\n'
        '}\n'
    )
    from tests.unit.test_decision_log import delegated

    enf = delegated(out, mode='shadow', overlay_path=[str(overlays)])
    # With overlays, Rego is asked with the whole input: the token too.
    secret = 'gAAAAA-shadow-secret'
    admin = {'roles': ['admin'], 'project_id': 'p1', 'auth_token': secret}
    with caplog.at_level(logging.WARNING, logger='oslo_opa'):
        assert enf.enforce('delete_thing', {'project_id': 'frozen'}, admin)
        assert enf.enforce('delete_thing', {'project_id': 'open'}, admin)
        assert enf.enforce('get_thing', {'project_id': 'frozen'}, admin)
        shadow = check.decider_for(enf.conf).shadow
        assert shadow.flush(30)
    assert dict(shadow.mismatches) == {'delete_thing': 1}
    assert shadow.compared == 3
    line = next(r.getMessage() for r in caplog.records if 'shadow' in r.name)
    assert 'Rego says deny' in line and 'frozen' in line
    assert secret not in caplog.text
