"""The effective rule table: files, namespaces, config, and bad input."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import inputs, probe
from oslo_opa.convert import compile_table, convert, emit, load_rule_table
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import ConversionError, StrictModeError
from tests import corpus
from tests.differential import enforcer_for, oslo_decision


def write(path, text):
    path.write_text(textwrap.dedent(text), encoding='utf-8')
    return str(path)


def check_strs(table):
    return {n: str(c) for n, c in table.rules.items()}


def test_later_policy_files_override_earlier(tmp_path):
    a = write(tmp_path / 'a.yaml', 'r1: role:a\nr2: role:a\n')
    b = write(tmp_path / 'b.json', '{"r2": "role:b", "r3": "@"}')
    table = load_rule_table(policy_files=[a, b])
    assert check_strs(table) == {'r1': 'role:a', 'r2': 'role:b', 'r3': '@'}
    assert table.origins['r2'] == f'{b}:1'
    assert table.origins['r1'] == f'{a}:1'


def test_legacy_list_syntax(tmp_path):
    f = write(
        tmp_path / 'p.json',
        json.dumps(
            {
                'r1': [['role:a', 'role:b'], ['role:c']],
                'r2': [],
                'r3': [['role:x']],
                'r4': [[]],
            }
        ),
    )
    table = load_rule_table(policy_files=[f])
    assert check_strs(table) == {
        'r1': '((role:a and role:b) or role:c)',
        'r2': '@',
        'r3': 'role:x',
        'r4': '!',
    }


@pytest.mark.parametrize(
    'text, line',
    [
        ('a: role:x\nb: [unclosed\n', 3),
        ('{"a": "role:x",\n "b": "x" "y"}\n', 2),
        ('a: role:x\n  bad indent: 1\n', 2),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, text, line):
    f = write(tmp_path / 'p.yaml', text)
    with pytest.raises(ConversionError) as e:
        load_rule_table(policy_files=[f])
    assert f'{f}:{line}:' in str(e.value)


@pytest.mark.parametrize(
    'text, fragment',
    [
        ('- role:a\n', 'must map rule names'),
        ('a: 1\n', "rule 'a'"),
        ('x: role:a\na: {b: c}\n', "p.yaml:2: rule 'a'"),
    ],
)
def test_bad_rule_values(tmp_path, text, fragment):
    f = write(tmp_path / 'p.yaml', text)
    with pytest.raises(ConversionError, match=fragment):
        load_rule_table(policy_files=[f])


def test_null_value_warns_that_it_allows(tmp_path):
    f = write(tmp_path / 'p.yaml', 'a: role:x\nb:\n')
    table = load_rule_table(policy_files=[f])
    assert str(table.rules['b']) == '@'
    assert any(f'{f}:2' in w and "'b'" in w for w in table.warnings)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConversionError, match='cannot read policy file'):
        load_rule_table(policy_files=[str(tmp_path / 'missing.yaml')])


def test_config_file_options(tmp_path):
    (tmp_path / 'policy.d').mkdir()
    write(tmp_path / 'policy.yaml', 'r1: role:a\nr2: rule:nope\nfb: "@"\n')
    write(tmp_path / 'policy.d' / '10.yaml', 'r1: role:z\n')
    conf = write(
        tmp_path / 'svc.conf',
        """
        [oslo_policy]
        policy_file = policy.yaml
        policy_default_rule = fb
        enforce_new_defaults = false
        """,
    )
    defaults = [
        oslo_policy.RuleDefault(
            'r9',
            'role:new',
            deprecated_rule=oslo_policy.DeprecatedRule(
                'r9', 'role:old', deprecated_reason='x', deprecated_since='y'
            ),
        )
    ]
    table = load_rule_table(config_file=conf, defaults=defaults)
    assert table.default_rule == 'fb'
    # policy.d (default policy_dirs, relative to the config) overrides.
    assert str(table.rules['r1']) == 'role:z'
    # enforce_new_defaults = false: the deprecated check is OR-ed in.
    assert str(table.rules['r9']) == '(role:new or role:old)'
    table = load_rule_table(
        config_file=conf, defaults=defaults, enforce_new_defaults=True
    )
    assert str(table.rules['r9']) == 'role:new'


def test_config_file_naming_missing_policy_file_warns(tmp_path):
    conf = write(tmp_path / 'svc.conf', '[oslo_policy]\npolicy_file = no\n')
    table = load_rule_table(config_file=conf)
    assert any('was not found' in w for w in table.warnings)


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConversionError):
        load_rule_table(config_file=str(tmp_path / 'nope.conf'))


def test_unknown_namespace(corpus_entry_points):
    with pytest.raises(ConversionError, match="namespace 'nope'"):
        load_rule_table(namespaces=['nope'])


def test_parse_failures_are_named(tmp_path):
    f = write(
        tmp_path / 'p.yaml',
        """
        good: role:a
        broken: role:a or or
        partly: role:a or nocolon
        """,
    )
    conv = convert(str(tmp_path / 'out'), policy_files=[f])
    text = '\n'.join(conv.warnings)
    assert "rule 'broken'" in text
    assert "rule 'partly'" in text
    assert "'good'" not in text
    with pytest.raises(StrictModeError) as e:
        convert(str(tmp_path / 'out2'), policy_files=[f], strict=True)
    assert len(e.value.warnings) == 2
    assert not os.path.exists(tmp_path / 'out2')


@pytest.mark.parametrize('kind', ['http', 'https'])
def test_http_checks_are_refused(tmp_path, kind):
    f = write(tmp_path / 'p.yaml', f'ok: "@"\nremote: {kind}://x/%(a)s\n')
    with pytest.raises(ConversionError, match="rule 'remote'.*http"):
        convert(str(tmp_path / 'out'), policy_files=[f])
    assert not os.path.exists(tmp_path / 'out')


def test_cycles_are_named_and_deny_only_when_reached(tmp_path):
    f = write(
        tmp_path / 'p.yaml',
        """
        a: role:admin or rule:b
        b: rule:a
        c: not rule:a
        """,
    )
    table = load_rule_table(policy_files=[f])
    conv = convert(str(tmp_path / 'out'), policy_files=[f])
    assert any('a -> b -> a' in w for w in conv.warnings)
    policy = RegoPolicy(str(tmp_path / 'out'))
    enforcer = enforcer_for(table)
    for roles in (['admin'], ['member']):
        creds = {'roles': roles}
        for rule in 'abc':
            doc = inputs.build_input(creds, {}, rule)
            assert policy.evaluate(rule, doc) == oslo_decision(
                enforcer, rule, creds, {}
            ), (rule, roles)
    assert policy.evaluate(
        'a', inputs.build_input({'roles': ['admin']}, {}, 'a')
    )


def test_undefined_reference_falls_back_to_default_rule(tmp_path):
    f = write(
        tmp_path / 'p.yaml',
        """
        default: role:fallback
        r: rule:undefined
        """,
    )
    convert(str(tmp_path / 'out'), policy_files=[f])
    policy = RegoPolicy(str(tmp_path / 'out'))
    assert policy.evaluate('r', {'credentials': {'roles': ['fallback']}})
    assert not policy.evaluate('r', {'credentials': {'roles': ['x']}})


def _registered_enforcer(service, enforce_new_defaults):
    conf = cfg.ConfigOpts()
    conf([])
    enforcer = oslo_policy.Enforcer(conf)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    conf.set_override(
        'enforce_new_defaults', enforce_new_defaults, 'oslo_policy'
    )
    enforcer.suppress_deprecation_warnings = True
    enforcer.register_defaults(corpus.defaults(service))
    enforcer.load_rules()
    return enforcer


@pytest.mark.parametrize('new_defaults', [True, False])
@pytest.mark.parametrize('service', corpus.SERVICES)
def test_namespace_conversion_agrees(
    corpus_entry_points, tmp_path, service, new_defaults
):
    """--namespace: registered defaults with their deprecated rules."""
    ns = corpus.namespace(service)
    table = load_rule_table(namespaces=[ns], enforce_new_defaults=new_defaults)
    enforcer = _registered_enforcer(service, new_defaults)
    assert check_strs(table) == {n: str(c) for n, c in enforcer.rules.items()}
    doc = corpus.document(service)
    parse = oslo_policy._parser.parse_rule
    changed = [
        r
        for r in doc['rules']
        if r['deprecated_rule']
        and r['deprecated_rule']['check_str'] != r['check_str']
    ]
    for r in changed[:5]:
        new = str(parse(r['check_str']))
        old = str(parse(r['deprecated_rule']['check_str']))
        # The deprecated check is OR-ed in exactly when asked for.
        expected = new if new_defaults else f'({new} or {old})'
        assert str(table.rules[r['name']]) == expected
    out = str(tmp_path / 'out')
    emit.write(compile_table(table, 'svc'), out, table.scope_types)
    policy = RegoPolicy(out)
    mismatches = []
    for rule in table.rules:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'ns:{service}:{rule}')
        check = enforcer.rules[rule]
        for creds, target in gen.inputs(25):
            # A check tree, not a name: scope is the Enforcer's business.
            expected = oslo_decision(enforcer, check, creds, target)
            got = policy.evaluate(
                rule, inputs.build_input(creds, target, rule)
            )
            if got != expected:
                mismatches.append((rule, creds, target, expected, got))
    assert not mismatches, mismatches[:10]
