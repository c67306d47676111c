"""Explanations: references, overlays, hand edits, raising checks, the
CLI and the Decider (issue 11, part 3).  The corpus-wide proof is
test_explain_corpus; each explanation here is checked the same way
(tests/explained.py) where oslo.policy can say what is true."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import yaml

from oslo_opa import cli, decider, explain, overlay
from oslo_opa.convert import convert, load_rule_table
from oslo_opa.drivers.base import Driver, Settings
from oslo_opa.engine import RegoPolicy
from tests import explained, overlays
from tests.corpus import policy_file
from tests.differential import enforcer_for

KEYSTONE = policy_file('keystone')
# Names and matches holding a quote, a backslash: no Rego literal equals
# them, and none may inject Rego.
WEIRD = 'we"ird\\name'
RULES = {
    'default': 'role:member',
    'base': 'role:admin or is_admin:1',
    'reads': 'rule:base or project_id:%(target.project_id)s',
    'falls_back': 'rule:nothing_here and role:reader',
    'negated': 'not rule:base and token.domain.id:d1',
    'cycle_a': 'role:x or rule:cycle_b',
    'cycle_b': 'rule:cycle_a',
    WEIRD: 'role:A"B\\C or project_id:%(t"k\\)s',
    'reads_weird': f'rule:{WEIRD}',
}


def _convert(tmp_path, rules, name='p'):
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(rules))
    out = str(tmp_path / f'{name}-out')
    convert(out, policy_files=[str(path)], tests=False)
    table = load_rule_table(policy_files=[str(path)])
    return out, table


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    out, table = _convert(tmp_path_factory.mktemp('small'), RULES)
    return RegoPolicy(out), table, enforcer_for(table)


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('ks') / 'out')
    convert(out, policy_files=[KEYSTONE], tests=False)
    return out


def _true(policy, enforcer, rule, creds, target=None):
    result = explain.explain(policy, rule, creds, target or {})
    found = explained.problems(result, enforcer, rule, creds, target or {})
    assert not found, (found, result)
    return result


def _rule_nodes(result):
    return [n for n in explained.nodes(result['tree']) if n['kind'] == 'rule']


# --- rule: references --------------------------------------------------------


def test_a_reference_is_followed_into_the_rule_it_reads(small):
    policy, _, enforcer = small
    result = _true(policy, enforcer, 'reads', {'roles': ['admin']})
    assert result['decision'] is True
    read = result['tree']['children'][0]['children'][0]
    assert (read['kind'], read['text'], read['rule']) == (
        'rule',
        'rule:base',
        'base',
    )
    assert read['outcome'] == 'pass'
    leaf = read['children'][0]['children'][0]
    assert (leaf['text'], leaf['outcome']) == ('role:admin', 'pass')
    assert leaf['credentials'] == {'roles': ['admin']}


def test_an_undefined_reference_is_the_default_rules(small):
    policy, _, enforcer = small
    result = _true(
        policy, enforcer, 'falls_back', {'roles': ['member', 'reader']}
    )
    read = _rule_nodes(result)[1]
    assert read['rule'] == 'default'
    assert "'nothing_here' is not defined" in read['note']
    assert result['decision'] is True


def test_a_reference_cycle_raises_where_it_is_reached(small):
    policy, _, enforcer = small
    passed = _true(policy, enforcer, 'cycle_a', {'roles': ['x']})
    assert passed['decision'] is True
    result = _true(policy, enforcer, 'cycle_a', {'roles': []})
    assert result['tree']['outcome'] == 'raise'
    cycle = [n for n in _rule_nodes(result) if n.get('note')]
    assert 'reference cycle' in cycle[0]['note']
    assert cycle[0]['outcome'] == 'raise'


def test_an_undefined_reference_without_a_default_is_false(tmp_path):
    out, table = _convert(tmp_path, {'r': 'rule:missing or role:a'})
    result = _true(RegoPolicy(out), enforcer_for(table), 'r', {})
    missing = _rule_nodes(result)[1]
    assert missing['outcome'] == 'fail'
    assert 'no such rule' in missing['note']


def test_quotes_and_backslashes_reach_no_rego_unencoded(small):
    policy, _, enforcer = small
    for creds, target in [
        ({'roles': ['a"b\\c']}, {}),
        ({'roles': ['x'], 'project_id': 'p"\n'}, {'t"k\\': 'p"\n'}),
        ({'roles': ['x'], 'project_id': 'p'}, {'t"k\\': 'q'}),
    ]:
        result = _true(policy, enforcer, 'reads_weird', creds, target)
        assert _rule_nodes(result)[1]['rule'] == WEIRD
    plan = explain._explainer(policy).plan(WEIRD)
    assert '"B' not in plan.module and 'base64.decode' in plan.module


# --- raising checks ----------------------------------------------------------


def test_a_raising_check_is_the_failing_leaf(small):
    policy, _, enforcer = small
    result = _true(policy, enforcer, 'reads', {'roles': [1]})
    assert result['decision'] is False
    assert result['tree']['outcome'] == 'raise'
    leaves = explain.failing_leaves(result)
    assert [(x['text'], x['outcome']) for x in leaves] == [
        ('role:admin', 'raise')
    ]
    # oslo.policy stops at the raise: the rest is not reached.
    later = [n for n in explained.nodes(result['tree']) if not n['reached']]
    assert {n['text'] for n in later} >= {
        'is_admin:1',
        'project_id:%(target.project_id)s',
    }


def test_walking_a_credential_path_into_a_string_raises(small):
    policy, _, enforcer = small
    result = _true(policy, enforcer, 'negated', {'token': 'text'})
    walk = [n for n in explained.nodes(result['tree'])][-1]
    assert (walk['text'], walk['outcome']) == ('token.domain.id:d1', 'raise')
    assert walk['credentials'] == {'token': 'text'}
    result = _true(policy, enforcer, 'negated', {'roles': ['admin']})
    leaves = explain.failing_leaves(result)
    assert leaves[0]['text'] == 'role:admin'
    assert leaves[0]['outcome'] == 'pass' and leaves[0]['negated']


# --- overlays ----------------------------------------------------------------


@pytest.fixture(scope='module')
def overlaid(keystone, tmp_path_factory):
    table = load_rule_table(policy_files=[KEYSTONE])
    grants, denies = overlays.chosen(table)
    path = tmp_path_factory.mktemp('ov') / 'overlay.rego'
    path.write_text(overlays.overlay_rego(grants, denies))
    policy = RegoPolicy(keystone, overlays=overlay.load([str(path)]))
    custom = enforcer_for(overlays.customized(table, grants, denies))
    return policy, table, custom, grants, denies, str(path)


def test_overlays_explain_true_with_their_reasons(overlaid):
    policy, table, enforcer, grants, denies, _ = overlaid
    rules = sorted(set(grants[:4] + denies[:4]))
    rules += [
        r
        for r in sorted(table.rules)
        if set(policy.manifest.closure(r)) & set(rules) and r not in rules
    ][:4]
    compared = 0
    for rule in rules:
        for creds, target in overlays.inputs_for(table, rule, 2):
            _true(policy, enforcer, rule, creds, target)
            compared += 1
    assert compared > 50
    # The check string passes (an admin): the deny decides.
    creds = {'roles': ['admin', 'suspended']}
    assert 'admin_required' in denies
    denied = _true(policy, enforcer, 'admin_required', creds)
    leaves = explain.failing_leaves(denied)
    assert [x['kind'] for x in leaves] == ['overlay']
    assert leaves[0]['negated'] and leaves[0]['outcome'] == 'pass'
    assert leaves[0]['reasons'] == {'*': ['suspended users can do nothing']}
    granted = _true(policy, enforcer, grants[0], {'roles': ['auditor']})
    grant = granted['tree']['children'][0]['children'][0]['children'][0]
    assert grant['kind'] == 'overlay' and grant['outcome'] == 'pass'
    assert grant['reasons'] == {grants[0]: ['auditors']}


# --- hand edits --------------------------------------------------------------


def test_a_hand_edited_rule_says_only_its_decision_is_known(
    tmp_path, keystone
):
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    overlays.edit_admin_required(out)
    policy = RegoPolicy(out)
    table = load_rule_table(policy_files=[KEYSTONE])
    enforcer = enforcer_for(overlays.edited_table(table))
    creds = {'roles': ['admin', 'suspended']}
    own = _true(policy, enforcer, 'admin_required', creds)
    assert own['decision'] is False
    assert own['tree']['children'] == []
    assert own['tree']['note'] == explain.EDITED
    # A reader is explained, the edited rule it reads by its outcome.
    reader = _true(policy, enforcer, 'identity:get_project', creds)
    edited = [n for n in _rule_nodes(reader) if n.get('note')]
    assert edited[0]['rule'] == 'admin_required'
    assert edited[0]['outcome'] == 'fail'
    admin = _true(
        policy, enforcer, 'identity:get_project', {'roles': ['admin']}
    )
    assert admin['decision'] is True


def test_rego_the_converter_would_not_write_is_not_explained(
    tmp_path, keystone
):
    """Same digest as the manifest, another state line: not provably
    the Rego of the check string, so only the outcome is known."""
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    module = os.path.join(out, 'keystone', 'admin_required.rego')
    with open(module) as f:
        text = f.read()
    first = 'lib.role_lowered("admin")'
    second = 'lib.generic(["1"], lib.step(lib.root, "is_admin"))'
    text = text.replace(f'{first}, {second}', f'{second}, {first}')
    with open(module, 'w') as f:
        f.write(text)
    manifest = os.path.join(out, 'manifest.json')
    with open(manifest) as f:
        doc = json.load(f)
    digest = hashlib.sha256(text.encode()).hexdigest()
    doc['rules']['admin_required']['sha256'] = digest
    with open(manifest, 'w') as f:
        json.dump(doc, f)
    result = explain.explain(RegoPolicy(out), 'admin_required', {}, {})
    assert result['tree']['note'] == explain.UNPROVEN
    assert result['notes'] == []


def test_a_module_of_ones_own_is_noted(tmp_path, keystone):
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    with open(os.path.join(out, 'mine.rego'), 'w') as f:
        f.write('package mine\n\nx := 1\n')
    policy = RegoPolicy(out)
    table = load_rule_table(policy_files=[KEYSTONE])
    result = _true(policy, enforcer_for(table), 'admin_required', {})
    assert result['notes'] == [explain.LIBRARY]
    assert result['tree']['children'], 'still explained'


# --- the CLI -----------------------------------------------------------------


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_json_shape(capsys, keystone):
    base = ['explain', keystone, 'identity:get_project']
    code, out, _ = _cli(capsys, *base, '--creds', '{"roles": ["admin"]}')
    assert code == 0 and out.startswith('ALLOW  identity:get_project')
    code, out, _ = _cli(
        capsys,
        *base,
        '--creds',
        '{"roles": ["reader"], "project_id": "p1"}',
        '--target',
        '{"target.project.id": "p2"}',
        '--format',
        'json',
    )
    assert code == 3
    result = json.loads(out)
    assert result['rule'] == 'identity:get_project'
    assert result['decision'] is False
    assert not explained.shape_problems(result)
    assert explain.recompute(result['tree']) == 'fail'
    leaf = [n for n in explained.nodes(result['tree'])][-1]
    assert leaf['credentials'] == {'project_id': 'p1'}
    assert leaf['target'] == {'target.project.id': 'p2'}
    code, out, _ = _cli(
        capsys, *base, '--creds', '{"project_id": "p1"}', '--mask'
    )
    assert code == 3 and 'p1' not in out and '***' in out
    for argv, message in [
        ([*base, '--creds', '[]'], 'expected a JSON object'),
        ([*base, '--target', '{'], 'not valid JSON'),
        (['explain', keystone, 'no:such:rule'], 'not in'),
    ]:
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
    with pytest.raises(SystemExit) as usage:
        cli.main(['explain', keystone])
    assert usage.value.code == 2


def test_cli_shows_overlay_reasons(capsys, keystone, overlaid):
    path = overlaid[-1]
    code, out, _ = _cli(
        capsys,
        'explain',
        keystone,
        'identity:get_project',
        '--creds',
        '{"roles": ["admin", "suspended"]}',
        '--overlay',
        path,
    )
    assert code == 3
    assert 'PASS   overlay deny["identity:get_project"] or deny["*"]' in out
    assert 'suspended users can do nothing' in out


# --- the Decider and logs ----------------------------------------------------


class _Remote(Driver):
    """A driver that is not the embedded engine (as http is)."""

    def __init__(self, settings, answer):
        super().__init__(settings)
        self.answer = answer

    def input_for(self, rule, creds, target):
        return {'credentials': dict(creds), 'target': dict(target)}

    def decide(self, rule, input_doc):
        return self.answer


def test_decider_explains_with_its_driver_or_the_embedded_engine(keystone):
    creds = {'roles': ['admin']}
    d = decider.load(keystone)
    result = d.explain('admin_required', {}, creds)
    assert result['decision'] is True and result['notes'] == []
    remote = decider.Decider(_Remote(Settings(rego_path=keystone), False))
    result = remote.explain('admin_required', {}, creds)
    assert result['decision'] is False
    assert "the tree is the embedded engine's" in result['notes'][0]
    assert 'decides True' in result['notes'][1]
    with pytest.raises(KeyError):
        d.explain('no:such:rule', {}, creds)


def test_failing_leaves_render_masked_on_one_line(small):
    policy, _, _ = small
    result = explain.explain(
        policy, 'reads', {'roles': ['r'], 'project_id': 'p1'}, {}
    )
    line = explain.render_leaves(explain.failing_leaves(result))
    assert '\n' not in line and 'p1' not in line
    assert 'role:admin fail (match "admin", credentials roles="***")' in line
    text = explain.render(result, mask_credentials=True)
    assert 'p1' not in text and text.startswith('DENY  reads')
    assert (
        explain.failing_leaves(
            explain.explain(policy, 'base', {'roles': ['admin']}, {})
        )
        == []
    )


def test_masking_keeps_or_masks_named_credentials(small):
    policy, _, _ = small
    result = explain.explain(
        policy, 'reads', {'roles': ['r'], 'project_id': 'p1'}, {}
    )
    leaves = explain.failing_leaves(result)
    assert leaves[-1]['credentials'] == {'project_id': 'p1'}
    kept = explain.failing_leaves(explain.mask(result, keep=('project_id',)))
    assert kept[-1]['credentials'] == {'project_id': 'p1'}
    assert kept[0]['credentials'] == {'roles': '***'}
    some = explain.failing_leaves(explain.mask(result, only=('roles',)))
    assert some[-1]['credentials'] == {'project_id': 'p1'}
    assert some[0]['credentials'] == {'roles': '***'}
    assert result == explain.explain(
        policy, 'reads', {'roles': ['r'], 'project_id': 'p1'}, {}
    ), 'masking copies'
