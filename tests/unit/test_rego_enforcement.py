"""The RegoEnforcement fixture: every Enforcer decides with Rego.

What a service's test suite does to its Enforcers: registered defaults
(with enforce_new_defaults either way), a policy file written during a
test, ``set_rules()``; each decision must come from the converted Rego
(counted) and equal oslo.policy's (shadow mode compares), and a wrong
conversion must fail the test.
"""

from __future__ import annotations

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import fixture, rego_enforcement

DEFAULTS = [
    oslo_policy.RuleDefault('admin', 'role:admin'),
    oslo_policy.RuleDefault(
        'get',
        'role:reader and project_id:%(project_id)s',
        deprecated_rule=oslo_policy.DeprecatedRule(
            'get', 'rule:admin', deprecated_reason='r', deprecated_since='T'
        ),
    ),
    oslo_policy.RuleDefault('delete', 'rule:admin or user_id:%(user_id)s'),
]
READER = {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'}
ADMIN = {'roles': ['admin'], 'project_id': 'p9', 'user_id': 'u9'}
TARGET = {'project_id': 'p1', 'user_id': 'u1'}


def _enforcer(tmp_path, new_defaults=False, policy=None):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    path = tmp_path / 'policy.yaml'
    if policy is not None:
        path.write_text(policy)
    enforcer = oslo_policy.Enforcer(conf, policy_file=str(path))
    conf.set_override('policy_dirs', [], 'oslo_policy')
    conf.set_override('enforce_new_defaults', new_defaults, 'oslo_policy')
    enforcer.suppress_deprecation_warnings = True
    enforcer.suppress_default_change_warnings = True
    enforcer.register_defaults(DEFAULTS)
    return enforcer


def _decide(enforcer, creds):
    return [
        enforcer.enforce(rule, TARGET, dict(creds))
        for rule in ('get', 'delete')
    ]


@pytest.mark.parametrize('new_defaults', [False, True])
def test_registered_defaults_decide_through_rego(tmp_path, new_defaults):
    rego = fixture.RegoEnforcement(shadow=True)
    rego.setUp()
    try:
        enforcer = _enforcer(tmp_path, new_defaults)
        got = _decide(enforcer, READER) + _decide(enforcer, ADMIN)
        # With the old defaults get is "new or rule:admin": admin may.
        assert got == [True, True, not new_defaults, True]
        assert rego.decisions == 4
        assert rego.differences == []
        # The service's configuration has [oslo_opa] registered.
        assert enforcer.conf.oslo_opa.driver == 'embedded'
    finally:
        rego.cleanUp()


def test_a_policy_file_written_mid_test_and_set_rules(tmp_path):
    rego = fixture.RegoEnforcement(shadow=True)
    rego.setUp()
    try:
        enforcer = _enforcer(tmp_path)
        assert _decide(enforcer, READER) == [True, True]
        # Written during the test: the next enforce() reloads it.
        path = tmp_path / 'policy.yaml'
        path.write_text('"get": "role:auditor"\n')
        enforcer.load_rules(force_reload=True)
        assert _decide(enforcer, READER) == [False, True]
        enforcer.set_rules(
            oslo_policy.Rules.from_dict({'delete': '!', 'admin': '@'}),
            overwrite=False,
        )
        # delete is now "!", and rules reading admin see "@".
        assert _decide(enforcer, READER) == [False, False]
        assert rego.decisions == 6
        assert rego.differences == []
    finally:
        rego.cleanUp()


def test_shadow_mode_fails_a_test_on_a_wrong_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(rego_enforcement, '_converted', {})
    real = rego_enforcement.compile_table

    def wrong(table, prefix):
        rules = dict(table.rules)
        rules['delete'] = oslo_policy.Rules.from_dict({'x': '@'})['x']
        return real(type(table)(rules=rules), prefix)

    monkeypatch.setattr(rego_enforcement, 'compile_table', wrong)
    rego = fixture.RegoEnforcement(shadow=True)
    rego.setUp()
    enforcer = _enforcer(tmp_path)
    # The wrong conversion allows what oslo.policy denies.
    assert enforcer.enforce('delete', TARGET, dict(READER, user_id='u2'))
    with pytest.raises(Exception, match="'delete': Rego True, oslo.policy"):
        rego.cleanUp()
    assert rego.differences == [('delete', True, False)]
    assert rego.decisions == 1


def test_decisions_do_not_look_for_changed_files(tmp_path, monkeypatch):
    # A conversion never changes: stat-ing its files at every decision
    # was a quarter of the fixture's own time on cinder's policy tests.
    from oslo_opa.drivers import base

    monkeypatch.setattr(rego_enforcement, '_converted', {})
    looked = []
    real_stamp = base.stamp

    def stamp(paths):
        looked.append(paths)
        return real_stamp(paths)

    monkeypatch.setattr(base, 'stamp', stamp)
    rego = fixture.RegoEnforcement(shadow=True)
    rego.setUp()
    try:
        enforcer = _enforcer(tmp_path)
        for _ in range(5):
            _decide(enforcer, READER)
        assert rego.decisions == 10
        # The first decision loads the conversion; no other looks.
        assert 0 < len(looked) <= 2
    finally:
        rego.cleanUp()


def test_without_the_fixture_nothing_changes(tmp_path):
    enforcer = _enforcer(tmp_path)
    enforcer.load_rules()
    assert not any(
        type(c) is rego_enforcement._Delegated for c in enforcer.rules.values()
    )


def personas() -> list:
    """Ordinary callers, as RequestContexts."""
    from oslo_context import context

    return [
        context.RequestContext(user_id='u1', roles=roles, **extra)
        for roles, extra in (
            (['reader'], {'project_id': 'p1'}),
            (['member', 'reader'], {'project_id': 'p1'}),
            (['admin', 'member', 'reader'], {'project_id': 'p2'}),
            (['reader'], {'system_scope': 'all'}),
        )
    ]


def outcomes(service, path, callers, extra_rules=None) -> list[bool]:
    """Every registered rule of a corpus service, asked by each caller,
    through an Enforcer as a service builds it (extra_rules: then
    set_rules() with them)."""
    from tests import corpus

    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, policy_file=path)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    enforcer.suppress_deprecation_warnings = True
    enforcer.suppress_default_change_warnings = True
    enforcer.register_defaults(corpus.defaults(service))
    enforcer.load_rules()
    if extra_rules:
        enforcer.set_rules(
            oslo_policy.Rules.from_dict(extra_rules), overwrite=False
        )
    target = {'project_id': 'p1', 'user_id': 'u1'}
    return [
        bool(enforcer.enforce(name, target, creds))
        for name in sorted(enforcer.registered_rules)
        for creds in callers
    ]


@pytest.mark.parametrize('service', ['nova', 'keystone'])
def test_a_real_service_decides_as_oslo_policy(tmp_path, service):
    """A corpus service's registered defaults, every rule, asked by
    ordinary personas with RequestContexts: every decision from Rego,
    none different from oslo.policy's."""
    path = str(tmp_path / 'none.yaml')
    native = outcomes(service, path, personas())
    rego = fixture.RegoEnforcement(shadow=True)
    rego.setUp()
    try:
        delegated = outcomes(service, path, personas())
    finally:
        rego.cleanUp()
    # Test by test the same outcomes; every rule evaluated came from
    # Rego (scope refusals, which oslo.policy makes before the rule,
    # evaluate none).
    assert delegated == native
    assert 0 < native.count(True) <= rego.decisions <= len(native)
    assert rego.differences == []
