"""oslo_opa.fixture: a converted policy for one unit test."""

from __future__ import annotations

import os

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import fixture
from tests import policies


@pytest.fixture
def converted(tmp_path):
    return policies.converted(str(tmp_path), policies.THINGS, tests=True)


def _module(out):
    with open(os.path.join(out, 'p', 'delete_thing.rego')) as f:
        return f.read()


def test_decides_the_converted_policy(converted):
    member = {'roles': ['member'], 'project_id': 'p1'}
    with fixture.RegoPolicy(converted) as rego:
        assert rego.decide('get_thing', {'project_id': 'p1'}, member)
        assert not rego.decide('get_thing', {'project_id': 'p2'}, member)
        assert not rego.decide('delete_thing', {}, member)


def test_override_rule_for_one_test_only(converted):
    original = _module(converted)
    member = {'roles': ['member']}
    with fixture.RegoPolicy(converted) as rego:
        rego.override_rule('delete_thing', 'allow := true')
        assert rego.decide('delete_thing', {}, member)
        assert not rego.decide('get_thing', {}, member)
        copy = rego.path
    # The original directory is untouched, the copy is gone.
    assert _module(converted) == original
    assert not os.path.exists(copy)


def test_data_documents(converted):
    creds = {'user': 'u1', 'roles': []}
    with fixture.RegoPolicy(converted, data={'owners': {'t1': 'u1'}}) as rego:
        rego.override_rule(
            'delete_thing',
            'allow if data.owners[input.target.id] == input.credentials.user',
        )
        assert rego.decide('delete_thing', {'id': 't1'}, creds)
        rego.set_data({'owners': {'t1': 'u2'}})
        assert not rego.decide('delete_thing', {'id': 't1'}, creds)


def test_configure_an_enforcer(converted):
    with fixture.RegoPolicy(converted) as rego:
        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[])
        rego.configure(conf)
        enforcer = oslo_policy.Enforcer(conf, policy_file=rego.delegation_file)
        conf.set_override('policy_dirs', [], 'oslo_policy')
        admin = {'roles': ['ADMIN']}
        assert enforcer.enforce('delete_thing', {}, admin)
        rego.override_rule('admin', 'allow := false')
        assert not enforcer.enforce('delete_thing', {}, admin)


def test_overlays_read_the_data_set_data_sets(converted, tmp_path):
    """An overlay reading a data document: set_data() changes what it
    decides, through the rule that reads the overlaid one too."""
    odir = tmp_path / 'overlays'
    odir.mkdir()
    (odir / 'frozen.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["admin"] contains "frozen" if '
        'input.credentials.user_id in data.frozen\n'
    )
    admin = {'roles': ['admin'], 'user_id': 'u1'}
    with fixture.RegoPolicy(
        converted, data={'frozen': []}, overlay_path=[str(odir)]
    ) as rego:
        assert rego.decide('delete_thing', {}, admin)
        assert rego.decide('get_thing', {'project_id': 'p9'}, admin)
        rego.set_data({'frozen': ['u1']})
        assert not rego.decide('delete_thing', {}, admin)
        assert not rego.decide('get_thing', {'project_id': 'p9'}, admin)
        # get_thing's own branch still holds for the frozen admin.
        own = {**admin, 'project_id': 'p9'}
        assert rego.decide('get_thing', {'project_id': 'p9'}, own)
        rego.set_data({'frozen': ['u2']})
        assert rego.decide('delete_thing', {}, admin)
