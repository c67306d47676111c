"""The ``opa`` check follows its configuration object as it changes.

A service reloading its config, or a test overriding ``[oslo_opa]``,
gets a Decider built from the new values at the next decision, with no
private call; an unrelated change keeps the Decider (and its compiled
bundles); options are registered where oslo.opa first meets a config.
"""

from __future__ import annotations

import pytest
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_policy import policy as oslo_policy

from oslo_opa import check, decider, opts
from tests.unit.test_runtime import convert_rules, service


@pytest.fixture(autouse=True)
def _fresh_deciders():
    check.reset()
    yield
    check.reset()


def _two(tmp_path):
    """Two conversions of rule r that decide a member's request apart."""
    allow, _ = convert_rules(
        tmp_path, {'r': 'role:member'}, 'a.yaml', str(tmp_path / 'a')
    )
    deny, _ = convert_rules(
        tmp_path, {'r': 'role:admin'}, 'b.yaml', str(tmp_path / 'b')
    )
    return allow, deny


def test_a_changed_option_gives_a_new_decider_at_the_next_decision(
    tmp_path, monkeypatch
):
    closed = []
    real = decider.Decider.close

    def close(this):
        closed.append(this)
        real(this)

    monkeypatch.setattr(decider.Decider, 'close', close)
    allow, deny = _two(tmp_path)
    enforcer = service(allow)
    creds = {'roles': ['member']}
    assert enforcer.enforce('r', {}, creds) is True
    first = check.decider_for(enforcer.conf)
    enforcer.conf.set_override('rego_path', deny, 'oslo_opa')
    assert enforcer.enforce('r', {}, creds) is False
    second = check.decider_for(enforcer.conf)
    assert second is not first
    assert closed == [first]
    enforcer.conf.clear_override('rego_path', 'oslo_opa')
    enforcer.conf.set_override('rego_path', allow, 'oslo_opa')
    assert enforcer.enforce('r', {}, creds) is True


def test_an_unrelated_change_keeps_the_decider(tmp_path):
    allow, _ = _two(tmp_path)
    enforcer = service(allow)
    enforcer.enforce('r', {}, {'roles': ['member']})
    first = check.decider_for(enforcer.conf)
    # Empties oslo.config's cache: the values are read again, and equal.
    enforcer.conf.set_override('policy_default_rule', 'x', 'oslo_policy')
    assert check.decider_for(enforcer.conf) is first
    enforcer.conf.set_override('cache_size', 7, 'oslo_opa')
    assert check.decider_for(enforcer.conf) is not first


def test_config_fixture_sets_options_before_any_decision(tmp_path):
    """A test can set [oslo_opa] with oslo.config's fixture once the
    options are registered; the check registers them itself, on the
    first decision, when nothing did."""
    allow, deny = _two(tmp_path)
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, policy_file=f'{allow}/policy.yaml')
    conf.set_override('policy_dirs', [], 'oslo_policy')
    with pytest.raises(cfg.NoSuchOptError):
        conf.oslo_opa  # noqa: B018 - nothing registered yet
    opts.register_opts(conf)
    fixture = config_fixture.Config(conf)
    fixture.setUp()
    try:
        fixture.config(group='oslo_opa', rego_path=deny)
        assert enforcer.enforce('r', {}, {'roles': ['member']}) is False
        fixture.config(group='oslo_opa', rego_path=allow)
        assert enforcer.enforce('r', {}, {'roles': ['member']}) is True
    finally:
        fixture.cleanUp()
    fresh = cfg.ConfigOpts()
    fresh(args=[], default_config_files=[])
    check.decider_for(fresh)
    assert fresh.oslo_opa.driver == 'embedded'
