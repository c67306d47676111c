"""A service switched to Rego by config alone decides as before.

For every service of the corpus: one oslo.policy Enforcer on the
original policy file against one on the delegation file that
``oslo-opa convert`` wrote, with ``[oslo_opa] driver = embedded``; both
have the service's defaults registered (scope types included), and are
asked with ``do_raise=True`` so InvalidScope is compared too.  Then the
same with ``--namespace`` conversion and ``enforce_new_defaults`` true
and false.
"""

from __future__ import annotations

import copy

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import check, opts, probe
from oslo_opa.convert import convert, load_rule_table
from tests import corpus

INPUTS_PER_RULE = 6
# The token scopes oslo.policy derives from creds: project, domain, system.
SCOPES = ({}, {'domain_id': 'd1'}, {'system_scope': 'all'})


def enforcer(policy_file, service, rego_path=None, new_defaults=None):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enf = oslo_policy.Enforcer(conf, policy_file=policy_file)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    if new_defaults is not None:
        conf.set_override('enforce_new_defaults', new_defaults, 'oslo_policy')
    if rego_path:
        opts.register_opts(conf)
        conf.set_override('rego_path', rego_path, 'oslo_opa')
    enf.suppress_deprecation_warnings = True
    enf.suppress_default_change_warnings = True
    enf.register_defaults(corpus.defaults(service))
    enf.load_rules()
    return enf


def outcome(enf, rule, creds, target):
    try:
        return bool(
            enf.enforce(
                rule,
                copy.deepcopy(target),
                copy.deepcopy(creds),
                do_raise=True,
            )
        )
    except oslo_policy.InvalidScope:
        return 'InvalidScope'
    except oslo_policy.PolicyNotAuthorized:
        return False
    except Exception as e:  # noqa: BLE001 - oslo.policy raising: a deny
        return f'raised {type(e).__name__}'


def compare(original, delegated, table, seed):
    mismatches = []
    outcomes = set()
    for rule in table.rules:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'{seed}:{rule}')
        for creds, target in gen.inputs(INPUTS_PER_RULE):
            for scope in SCOPES:
                c = {**creds, **scope}
                want = outcome(original, rule, c, target)
                got = outcome(delegated, rule, c, target)
                outcomes.add(str(want))
                # An oslo.policy raise is a deny through the delegation.
                if (
                    want if not str(want).startswith('raised') else False
                ) != got:
                    mismatches.append((rule, c, target, want, got))
    return mismatches, outcomes


@pytest.fixture(autouse=True)
def _fresh_deciders():
    yield
    check.reset()


@pytest.mark.parametrize('service', corpus.SERVICES)
def test_delegation_file_decides_like_the_policy_file(tmp_path, service):
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[corpus.policy_file(service)])
    original = enforcer(corpus.policy_file(service), service)
    delegated = enforcer(f'{out}/policy.yaml', service, rego_path=out)
    table = load_rule_table(policy_files=[corpus.policy_file(service)])
    mismatches, outcomes = compare(original, delegated, table, service)
    assert not mismatches, mismatches[:10]
    # Allows, denies and (where the service has scope types) scope
    # failures were all compared.
    expected = {'True', 'False'}
    if any(d.scope_types for d in corpus.defaults(service)):
        expected.add('InvalidScope')
    assert expected <= outcomes


@pytest.mark.parametrize('new_defaults', [True, False])
@pytest.mark.parametrize('service', ['keystone', 'nova', 'cinder'])
def test_namespace_conversion_with_deprecated_rules(
    tmp_path, corpus_entry_points, service, new_defaults
):
    out = str(tmp_path / 'opa')
    convert(
        out,
        namespaces=[corpus.namespace(service)],
        enforce_new_defaults=new_defaults,
    )
    # The original: no policy file at all, registered defaults only.
    original = enforcer(
        str(tmp_path / 'absent.yaml'), service, new_defaults=new_defaults
    )
    delegated = enforcer(
        f'{out}/policy.yaml',
        service,
        rego_path=out,
        new_defaults=new_defaults,
    )
    table = load_rule_table(
        namespaces=[corpus.namespace(service)],
        enforce_new_defaults=new_defaults,
    )
    mismatches, _ = compare(original, delegated, table, f'ns{new_defaults}')
    assert not mismatches, mismatches[:10]


def test_comparison_detects_a_wrong_delegation(tmp_path):
    """The comparison can fail: a delegation to the wrong rule differs."""
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[corpus.policy_file('placement')])
    path = tmp_path / 'opa' / 'policy.yaml'
    text = path.read_text()
    path.write_text(
        text.replace('opa:placement:resource_providers:list', 'opa:admin_api')
    )
    original = enforcer(corpus.policy_file('placement'), 'placement')
    delegated = enforcer(str(path), 'placement', rego_path=out)
    table = load_rule_table(policy_files=[corpus.policy_file('placement')])
    mismatches, _ = compare(original, delegated, table, 'wrong')
    assert {m[0] for m in mismatches} == {'placement:resource_providers:list'}
