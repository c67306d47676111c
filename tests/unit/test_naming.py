"""Rule names to packages, and the delegation file's encoding."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_policy import _checks
from oslo_policy import policy as oslo_policy

from oslo_opa.convert import compile_table, emit, naming
from oslo_opa.convert.rules import RuleTable
from oslo_opa.errors import ConversionError

IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')

AWKWARD = [
    'identity:get_project',
    'os_compute_api:os-agents',
    'os_compute_api:os-agents:list',
    'a.b.c',
    'create_port:fixed_ips:ip_address',
    '*',
    'a::b',
    'rule with spaces',
    'tab\there',
    'new\nline',
    'paren)',
    '(paren',
    'per%cent',
    '%41',
    'quote"s',
    "apo'strophe",
    'back\\slash',
    'ünïcödé',
    '名前',
    'nbsp\xa0name',
    'ideographic\u3000space',
    'default',
    'not',
    'and',
    '1starts_with_digit',
    '',
    'volume:test',
]


@pytest.mark.parametrize(
    'name, expected',
    [
        ('identity:get_project', 'identity_get_project'),
        ('os_compute_api:os-agents', 'os_compute_api_os_agents'),
        ('default', 'default_'),
        ('1x', 'r_1x'),
        ('', 'r_'),
        ('*', 'r_'),
        ('_x', 'r_x'),
        ('a:test', 'a_test_'),
        ('a_test', 'a_test_'),
        ('test', 'test'),
    ],
)
def test_slug(name, expected):
    assert naming.slug(name) == expected


def test_packages_are_identifiers_unique_and_deterministic():
    pkgs = naming.packages(AWKWARD, 'svc')
    assert len(set(pkgs.values())) == len(AWKWARD)
    for package in pkgs.values():
        prefix, last = package.split('.')
        assert prefix == 'svc'
        assert IDENT.match(last), package
        assert last not in naming.KEYWORDS
        assert not last.endswith('_test')
    assert naming.packages(list(reversed(AWKWARD)), 'svc') == pkgs


def test_colliding_slugs_get_hash_suffixes():
    pkgs = naming.packages(['a:b', 'a-b', 'a_b', 'c'], 'p')
    assert len(set(pkgs.values())) == 4
    assert pkgs['c'] == 'p.c'
    for name in ('a:b', 'a-b', 'a_b'):
        assert re.fullmatch(r'p\.a_b_[0-9a-f]{8}', pkgs[name])


@pytest.mark.parametrize(
    'prefix', ['', 'a..b', '1a', 'a-b', 'oslo_opa', 'oslo_opa.x', 'x.not']
)
def test_bad_prefix_is_refused(prefix):
    with pytest.raises(ConversionError, match='package prefix'):
        naming.validate_prefix(prefix)


@pytest.mark.parametrize(
    'files, expected',
    [
        (['/etc/keystone/policy.yaml'], 'keystone'),
        (['nova.policy.yaml'], 'nova'),
        (['/x/Some-Thing.json'], 'some_thing'),
    ],
)
def test_default_prefix(files, expected):
    assert naming.default_prefix([], files) == expected


def test_default_prefix_from_namespace():
    assert naming.default_prefix(['ironic.api'], ['x.yaml']) == 'ironic_api'


@given(st.text())
def test_match_encoding_round_trips(name):
    match = naming.encode_match(name)
    assert naming.decode_match(match) == name
    assert not re.search(r'[\s()]', match)


@settings(max_examples=200)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=6, unique=True))
def test_delegation_file_names_every_rule_through_oslo_policy(names):
    """oslo.policy's own parser reads each delegation check back whole."""
    table = RuleTable.from_strings({n: '@' for n in names})
    conv = compile_table(table, 'p')
    parsed = yaml.safe_load(emit.delegation_policy(conv))
    rules = oslo_policy.Rules.load(emit.delegation_policy(conv))
    assert list(parsed) == names
    for name in names:
        check = rules[name]
        assert isinstance(check, _checks.Check), (name, check)
        assert check.kind == 'opa'
        assert naming.decode_match(check.match) == name
