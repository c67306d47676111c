"""RegoEnforcement asking a real OPA: a service's registered defaults,
every rule, decided through ``opa run --server`` with each converted
table pushed to it, with the same outcomes as oslo.policy's."""

from __future__ import annotations

from oslo_config import cfg
from oslo_context import context
from oslo_policy import policy as oslo_policy

from oslo_opa import fixture, rego_enforcement
from tests import corpus
from tests.functional.test_opa_sidecar import Opa


def _outcomes(service, path, personas, extra_rules=None):
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
    out = []
    for name in sorted(enforcer.registered_rules):
        for creds in personas:
            target = {'project_id': 'p1', 'user_id': 'u1'}
            out.append(bool(enforcer.enforce(name, target, creds)))
    return out


def test_decisions_from_a_real_opa_equal_oslo_policys(
    opa_bin, tmp_path, monkeypatch
):
    monkeypatch.setattr(rego_enforcement, '_converted', {})
    opa = Opa(opa_bin, tmp_path).start()
    personas = [
        context.RequestContext(user_id='u1', roles=roles, **extra)
        for roles, extra in (
            (['reader'], {'project_id': 'p1'}),
            (['member', 'reader'], {'project_id': 'p1'}),
            (['admin', 'member', 'reader'], {'project_id': 'p2'}),
            (['reader'], {'system_scope': 'all'}),
        )
    ]
    path = str(tmp_path / 'none.yaml')
    # Pushing a table costs OPA a compile per module: a small service.
    override = {'placement:resource_providers:create': 'role:reader'}
    try:
        native = _outcomes('placement', path, personas)
        native_set = _outcomes('placement', path, personas, override)
        rego = fixture.RegoEnforcement(shadow=True, opa_url=opa.url)
        rego.setUp()
        try:
            delegated = _outcomes('placement', path, personas)
            # set_rules during a test: a second table, pushed beside the
            # first under a package prefix of its own.
            delegated_set = _outcomes('placement', path, personas, override)
        finally:
            rego.cleanUp()
    finally:
        opa.stop()
    assert delegated == native and delegated_set == native_set
    assert native != native_set
    assert 0 < native.count(True) <= rego.decisions
    assert rego.differences == []
    # Both tables were decided over http, by the OPA.
    deciders = list(rego_enforcement._converted.values())
    assert len(deciders) == 2
    assert all(type(d.driver).__name__ == 'HttpDriver' for d in deciders)
