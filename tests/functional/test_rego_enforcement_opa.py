"""RegoEnforcement asking a real OPA: a service's registered defaults,
every rule, decided through ``opa run --server`` with each converted
table pushed to it, with the same outcomes as oslo.policy's."""

from __future__ import annotations

from oslo_opa import fixture, rego_enforcement
from tests.functional.test_opa_sidecar import Opa
from tests.unit.test_rego_enforcement import outcomes, personas


def test_decisions_from_a_real_opa_equal_oslo_policys(
    opa_bin, tmp_path, monkeypatch
):
    monkeypatch.setattr(rego_enforcement, '_converted', {})
    opa = Opa(opa_bin, tmp_path).start()
    callers = personas()
    path = str(tmp_path / 'none.yaml')
    # Pushing a table costs OPA a compile per module: a small service.
    override = {'placement:resource_providers:create': 'role:reader'}
    try:
        native = outcomes('placement', path, callers)
        native_set = outcomes('placement', path, callers, override)
        rego = fixture.RegoEnforcement(shadow=True, opa_url=opa.url)
        rego.setUp()
        try:
            delegated = outcomes('placement', path, callers)
            # set_rules during a test: a second table, pushed beside the
            # first under a package prefix of its own.
            delegated_set = outcomes('placement', path, callers, override)
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
