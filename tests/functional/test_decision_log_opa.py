"""oslo.opa's decision events against a real OPA's, for the same
decisions.

OPA runs with ``decision_logs.console=true`` and the http driver asks
it; oslo.opa writes its own events to a file.  Where the two overlap
they must agree field for field, and they join on ``decision_id``.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from oslo_policy import policy as oslo_policy

from oslo_opa import bundle, check, manifest
from oslo_opa.convert import convert, load_rule_table
from tests import corpus
from tests.functional.test_opa_sidecar import (
    delegated_enforcer,
    run_opa,  # noqa: F401 - a fixture
    service_bundle,
)
from tests.unit.test_delegation_e2e import enforcer
from tests.unit.test_shadow import _flip, run_both

CHANGED = 'admin_api'

SERVICE = 'placement'
CREDS = [
    {'roles': ['admin'], 'project_id': 'p1'},
    {'roles': ['admin'], 'system_scope': 'all'},
    {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'},
    {'roles': ['member'], 'project_id': 'p2', 'auth_token': 'tok-secret'},
]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """SERVICE converted, as test_opa_sidecar's fixture gives it."""
    root = tmp_path_factory.mktemp('logs')
    directory = str(root / SERVICE)
    convert(directory, policy_files=[corpus.policy_file(SERVICE)])
    return root, {SERVICE: directory}


@pytest.fixture(autouse=True)
def _fresh_deciders():
    yield
    check.reset()


def opa_events(opa):
    events = []
    with open(opa.log, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line.startswith('{'):
                doc = json.loads(line)
                if doc.get('msg') == 'Decision Log':
                    events.append(doc)
    return events


def test_events_agree_with_opas_own(run_opa, converted, tmp_path):  # noqa: F811
    opa = run_opa(
        bundles=[service_bundle(converted, SERVICE)],
        extra_args=[
            '--set',
            'decision_logs.console=true',
            '--log-level',
            'info',
            '--log-format',
            'json',
        ],
    )
    directory = converted[1][SERVICE]
    path = str(tmp_path / 'oslo-opa.log')
    enf = delegated_enforcer(
        directory,
        SERVICE,
        opa,
        decision_log_file=path,
        cache_size=0,
        opa_warm_up=False,
    )
    rules = ['placement:resource_providers:list', 'admin_api']
    results = []
    for rule in rules:
        for creds in CREDS:
            try:
                enf.enforce(rule, {}, dict(creds), do_raise=True)
                results.append(True)
            except oslo_policy.InvalidScope:
                results.append('scope')
            except oslo_policy.PolicyNotAuthorized:
                results.append(False)
    assert check.decider_for(enf.conf).log.flush(10)
    with open(path, encoding='utf-8') as f:
        ours = [json.loads(line) for line in f]
    theirs = {e['decision_id']: e for e in opa_events(opa)}
    assert len(ours) == sum(r != 'scope' for r in results) > 0
    assert [e['result'] for e in ours] == [r for r in results if r != 'scope']
    assert {True, False} <= set(results)
    revision = manifest.load(directory).revision
    for event in ours:
        # Joined on the id OPA gave the decision.
        other = theirs[event['decision_id']]
        for field in ('path', 'input', 'result'):
            assert event[field] == other[field], field
        assert set(other['labels']) >= {'id', 'version'}
        assert set(event['labels']) >= {'id', 'version', 'service'}
        for stamp in (event['timestamp'], other['timestamp']):
            assert stamp.endswith('Z') and stamp[10] == 'T'
        assert isinstance(event['metrics'], dict)
        assert event['bundles']['oslo_opa']['revision'] == revision
        assert event['oslo_opa']['driver'] == 'http'
        assert event['oslo_opa']['route'] == 'remote'
    # Every field both have is of the same JSON type.
    sample, other = ours[0], theirs[ours[0]['decision_id']]
    for field in set(sample) & set(other):
        assert type(sample[field]) is type(other[field]), field
    # A failure logs every credential it was given: the token is erased
    # (the rules' own inputs above never carry it).
    d = check.decider_for(enf.conf)
    assert d.decide('no_such_rule', {}, dict(CREDS[-1])) is False
    assert d.log.flush(10)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    failed = json.loads(text.splitlines()[-1])
    assert '/input/credentials/auth_token' in failed['erased']
    assert 'tok-secret' not in text
    assert os.path.exists(opa.log)


@pytest.mark.parametrize('flipped', [False, True])
def test_shadow_mode_over_http(run_opa, converted, tmp_path, flipped):  # noqa: F811
    """Shadow mode through the http driver: the service gets
    oslo.policy's outcomes; OPA's decisions are compared, and only a
    changed rule differs."""
    directory = str(tmp_path / SERVICE)
    shutil.copytree(converted[1][SERVICE], directory)
    if flipped:
        _flip(directory, CHANGED)
    archive = str(tmp_path / 'bundle.tar.gz')
    bundle.build(directory, archive)
    opa = run_opa(bundles=[archive])
    original = enforcer(corpus.policy_file(SERVICE), SERVICE)
    shadowed = delegated_enforcer(directory, SERVICE, opa, mode='shadow')
    table = load_rule_table(policy_files=[corpus.policy_file(SERVICE)])
    different, asked = run_both(original, shadowed, table, 'http', 3)
    # One request CHANGED denies for sure (the generated ones may not
    # reach it within the project scope its defaults ask for).
    member = {'roles': ['member'], 'project_id': 'p1'}
    assert shadowed.enforce(CHANGED, {}, member) is False
    shadow = check.decider_for(shadowed.conf).shadow
    assert shadow.flush(60)
    assert not different, different[:5]
    assert shadow.compared > 0 and not shadow.errors, dict(shadow.errors)
    assert set(shadow.mismatches) == ({CHANGED} if flipped else set())
