"""The generated ``_test.rego`` files: which cases, what they expect.

Small hand-written policies cover each shape of check string; for every
generated case the expectation must be oslo.policy's own decision on the
case's input, and the converted Rego (regopy, in this process) must
decide the same.  With the Rego test runner (``oslo_opa.regotest``) the
files themselves run, and mutated rules must fail them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from oslo_opa import cli, inputs
from oslo_opa.convert import compile_table, convert, emit, testgen
from oslo_opa.convert.rules import RuleTable
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import ConversionError
from tests import differential, mutants

try:
    from oslo_opa.regotest import run as regotest_run
except ImportError:  # the runner is not there yet
    regotest_run = None

needs_runner = pytest.mark.skipif(
    regotest_run is None, reason='runner not available'
)

POLICIES = {
    'or': {
        'r': 'role:a or role:b or project_id:%(p)s',
    },
    'and': {
        'r': 'role:a and project_id:%(p)s and not is_admin:True',
    },
    'nested': {
        'r': '(role:a and (project_id:%(p)s or domain_id:%(d)s)) '
        'or is_admin:True',
    },
    'rule': {
        'base': 'role:y and system_scope:all',
        'r': 'rule:base or role:x',
        'missing': 'rule:nowhere or role:x',
    },
    'constants': {
        'always': '@',
        'never': '!',
        'empty': '',
        'via': 'rule:never',
        'literal': 'True:True or role:x',
        # is_admin:True never raises; role:x does, on odd roles.
        'or_any': 'is_admin:True or @',
        'raises_first': 'role:x or @',
    },
    'literals': {
        'r': "'PRIMARY':%(zone)s and (None:%(owner)s or user_id:%(owner)s)",
        'typed': 'is_admin:True or enabled:False',
    },
    'lists': {
        # A generic check on the roles list and one walking a nested
        # path: both compare items and walk lists.
        'roles_list': 'roles:admin or role:x',
        'path': 'token.project.id:%(p)s or role:x',
    },
    'odd': {
        'cycle_a': 'rule:cycle_b or role:x',
        'cycle_b': 'rule:cycle_a',
        'bad_format': 'role:%(x)d or role:y',
        'multi': 'user_id:u-%(a)s-%(b)s and role:%(r)s',
        'dup': 'role:x or role:X or (role:x and project_id:%(p)s)',
    },
    'awkward': {
        'r\u00f4le "q"': "role:\u00c4dmin or 'x\"y':%(k\\ey)s",
        'if': 'role:in and not role:not',
    },
}


def convert_policy(tmp_path, rules):
    table = RuleTable.from_strings(rules)
    conv = compile_table(table, 'svc')
    tests = testgen.generate(table, conv)
    directory = str(tmp_path / 'out')
    emit.write(conv, directory, table.scope_types, testgen.files(tests))
    return table, conv, tests, directory


@pytest.fixture(params=sorted(POLICIES))
def policy(request, tmp_path):
    return convert_policy(tmp_path, POLICIES[request.param])


def test_expectations_are_oslo_policys_and_the_rego_agrees(policy):
    table, _, tests, directory = policy
    enforcer = differential.enforcer_for(table)
    rego = RegoPolicy(directory)
    for name, t in tests.items():
        assert t.cases, name
        for case in t.cases:
            doc = case.document
            assert doc['rule'] == name
            assert set(doc) == {'credentials', 'target', 'rule'}
            # The input is what the runtime would send for these values.
            assert inputs.build_input(doc['credentials'], doc['target'], name)
            oslo = differential.oslo_decision(
                enforcer, name, doc['credentials'], doc['target']
            )
            assert case.expected is oslo, (name, case.name)
            assert rego.evaluate(name, doc) is oslo, (name, case.name)


def test_names_are_unique_identifiers_and_notes_quote_safely(policy):
    _, conv, tests, _ = policy
    for t in tests.values():
        names = [c.name for c in t.cases]
        assert len(set(names)) == len(names)
        for case in t.cases:
            verdict = 'allow' if case.expected else 'deny'
            assert re.fullmatch(rf'test_{verdict}(_[a-z0-9_]+)?', case.name)
        text = t.render()
        # Every text from the policy is escaped or base64-encoded.
        assert text.isascii()
        assert t.package == f'{conv.rules[t.rule].package}_test'
        assert t.path == t.package.replace('.', '/') + '.rego'
        assert f'package {t.package}\n' in text
        if t.cases:
            assert f'import data.{t.rule_package} as r\n' in text
        for case in t.cases:
            verdict = 'r.allow' if case.expected else 'not r.allow'
            assert f'{case.name} if {{\n\t{verdict} with input as {{' in text
            assert f'# {case.note}\n{case.name} if' in text


def test_or_branches_each_alone_then_none(tmp_path):
    table, _, tests, _ = convert_policy(tmp_path, POLICIES['or'])
    t = tests['r']
    by_name = {c.name: c for c in t.cases}
    assert [n for n in by_name if 'branch' in n] == [
        'test_allow_branch_1_role_a',
        'test_allow_branch_2_role_b',
        'test_allow_branch_3_project_id_p',
        'test_deny_no_branch',
        'test_deny_branch_1_role_a_roles_raise',
        'test_deny_branch_2_role_b_roles_raise',
        'test_deny_branch_3_project_id_p_roles_raise',
    ]
    # Each branch alone: the input holds exactly what it needs.
    assert by_name['test_allow_branch_1_role_a'].creds == {'roles': ['a']}
    assert by_name['test_allow_branch_3_project_id_p'].document == {
        'credentials': {'project_id': 'v1', 'roles': []},
        'target': {'p': 'v1'},
        'rule': 'r',
    }
    # None holds: near misses (another project; only other roles).
    none = by_name['test_deny_no_branch']
    assert none.creds['project_id'] != none.target['p']
    assert not {'a', 'b'} & set(none.creds['roles'])
    assert by_name['test_allow_role_case_a'].creds == {'roles': ['A']}
    missing = by_name['test_deny_missing_p']
    assert 'p' not in missing.target and missing.creds['project_id']
    assert t.not_built == []


def test_and_legs_each_fail_alone(tmp_path):
    _, _, tests, _ = convert_policy(tmp_path, POLICIES['and'])
    cases = {c.name: c for c in tests['r'].cases}
    assert cases['test_allow_all_legs'].document['credentials'] == {
        'project_id': 'v1',
        'roles': ['a'],
    }
    legs = [n for n in cases if n.startswith('test_deny_leg_')]
    assert legs == [
        'test_deny_leg_1_role_a',
        'test_deny_leg_2_project_id_p',
        'test_deny_leg_3_not_is_admin_true',
    ]
    # The failing leg fails by a near miss, the others hold.
    leg2 = cases['test_deny_leg_2_project_id_p']
    assert leg2.creds['roles'] == ['a']
    assert leg2.creds['project_id'] != leg2.target['p']
    assert cases['test_deny_leg_3_not_is_admin_true'].creds['is_admin'] is True


def test_nested_nodes_are_decisive_in_context(tmp_path):
    _, _, tests, _ = convert_policy(tmp_path, POLICIES['nested'])
    names = [c.name for c in tests['r'].cases]
    for expected in (
        'test_allow_branch_1',
        'test_deny_branch_1_leg_1_role_a',
        'test_deny_branch_1_leg_2_no_branch',
        'test_allow_branch_1_leg_2_branch_2_domain_id_d',
        'test_allow_branch_2_is_admin_true',
        'test_deny_no_branch',
    ):
        assert expected in names


def test_rule_references_count_as_one_check(tmp_path):
    _, _, tests, _ = convert_policy(tmp_path, POLICIES['rule'])
    cases = {c.name: c for c in tests['r'].cases}
    first = cases['test_allow_branch_1_rule_base']
    assert first.creds == {
        'system_scope': 'all',
        'roles': ['y'],
        'system': 'all',
    }
    assert 'test_allow_branch_2_role_x' in cases
    # An undefined rule (and no default) is False: that branch is out.
    missing = tests['missing']
    assert any('rule:nowhere' in why for why in missing.not_built)
    assert missing.allows and missing.denies


def test_constant_rules_get_the_one_outcome_they_have(tmp_path):
    table, _, tests, _ = convert_policy(tmp_path, POLICIES['constants'])
    outcome = {name: (t.allows > 0, t.denies > 0) for name, t in tests.items()}
    assert outcome == {
        'always': (True, False),
        'never': (False, True),
        'empty': (True, False),
        'via': (False, True),
        'literal': (True, False),
        'or_any': (True, False),
        'raises_first': (True, True),
    }
    assert {n: testgen.constant(table, n) for n in tests} == {
        'always': True,
        'never': False,
        'empty': True,
        'via': False,
        'literal': True,
        'or_any': True,
        'raises_first': None,
    }
    (deny,) = [c for c in tests['raises_first'].cases if not c.expected]
    assert deny.creds['roles'][-1] is None
    (case,) = tests['never'].cases
    assert case.document == {'credentials': {}, 'target': {}, 'rule': 'never'}
    assert tests['never'].not_built == [
        'a test where the check string should pass: no input makes "!" pass'
    ]
    text = tests['never'].render()
    assert '# Not built:\n#   a test where' in text


def test_literals_and_typed_values(tmp_path):
    _, _, tests, _ = convert_policy(tmp_path, POLICIES['literals'])
    cases = {c.name: c for c in tests['r'].cases}
    allow = cases['test_allow_all_legs']
    assert allow.target['zone'] == 'PRIMARY'
    # The literal compared with a missing target key, or a near miss.
    near = cases['test_deny_leg_1_primary_zone']
    assert near.target['zone'] not in ('PRIMARY', None)
    # None:%(owner)s holds: JSON null, as a service sends.
    assert allow.target['owner'] is None
    typed = {c.name: c for c in tests['typed'].cases}
    assert typed['test_allow_branch_1_is_admin_true'].creds['is_admin'] is True
    assert typed['test_allow_branch_2_enabled_false'].creds['enabled'] is False


def test_generic_checks_on_lists_fall_back_to_random_inputs(tmp_path):
    _, _, tests, _ = convert_policy(tmp_path, POLICIES['lists'])
    for t in tests.values():
        assert t.allows and t.denies, (t.rule, t.not_built)
    allowing = [c for c in tests['roles_list'].cases if c.expected]
    # roles:admin compares the items exactly (unlike role:admin).
    assert any('admin' in (c.creds.get('roles') or []) for c in allowing)


def test_cycles_unsupported_formats_and_duplicates(tmp_path):
    table, _, tests, _ = convert_policy(tmp_path, POLICIES['odd'])
    # rule:cycle_b raises in oslo.policy once reached: role:x allows only
    # when nothing reaches the cycle first, which it always does.
    assert tests['cycle_b'].allows == 0
    assert tests['bad_format'].allows  # role:y, the format not reached
    multi = {c.name: c for c in tests['multi'].cases}['test_allow_all_legs']
    a, b = multi.target['a'], multi.target['b']
    assert multi.creds['user_id'] == f'u-{a}-{b}'
    dup = tests['dup']
    # role:X is role:x: neither holds alone, and the third is subsumed.
    assert sum('alone holds' in why for why in dup.not_built) == 3
    assert dup.allows and dup.denies


def test_the_same_policy_gives_the_same_files(tmp_path):
    rules = POLICIES['nested'] | POLICIES['awkward']
    script = (
        'import json, sys\n'
        'from oslo_opa.convert import compile_table, testgen\n'
        'from oslo_opa.convert.rules import RuleTable\n'
        'table = RuleTable.from_strings(json.loads(sys.argv[1]))\n'
        'conv = compile_table(table, "svc")\n'
        'print(json.dumps(testgen.files(testgen.generate(table, conv))))\n'
    )
    outputs = []
    for seed in ('1', '2'):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run(
            [sys.executable, '-c', script, json.dumps(rules)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]


def test_convert_writes_tests_unless_told_not_to(tmp_path, capsys):
    policy = tmp_path / 'svc.policy.yaml'
    policy.write_text('a: role:x\nb: role:y or rule:a\n')
    out = tmp_path / 'out'
    assert (
        cli.main(['convert', '--policy-file', str(policy), '-o', str(out)])
        == 0
    )
    files = sorted(p.name for p in (out / 'svc').iterdir())
    assert 'a_test.rego' in files and 'b_test.rego' in files
    manifest = json.loads((out / emit.MANIFEST).read_text())
    assert manifest['version'] == 1
    assert (
        cli.main(
            [
                'convert',
                '--policy-file',
                str(policy),
                '-o',
                str(out),
                '--no-tests',
            ]
        )
        == 0
    )
    assert not [
        p for p in (out / 'svc').iterdir() if p.name.endswith('_test.rego')
    ]
    assert json.loads((out / emit.MANIFEST).read_text()) == manifest
    conv = convert(policy_files=[str(policy)], tests=False)
    assert set(conv.rules) == {'a', 'b'}
    capsys.readouterr()


def test_a_test_package_never_takes_another_rules_package(tmp_path):
    _, conv, tests, directory = convert_policy(
        tmp_path, {'a': 'role:x', 'a_test': 'role:y'}
    )
    packages = {r.package for r in conv.rules.values()}
    # (a rule's own slug never ends in _test: see naming.slug)
    assert conv.rules['a_test'].package == 'svc.a_test_'
    assert tests['a'].package not in packages
    assert tests['a'].package.startswith('svc.a_') and tests[
        'a'
    ].path.endswith('_test.rego')
    assert len({t.path for t in tests.values()}) == 2
    assert os.path.isfile(os.path.join(directory, tests['a'].path))
    with pytest.raises(ConversionError, match='a test module would replace'):
        emit.render(conv, {}, {emit.module_path('svc.a'): ''})


# --- with the Rego test runner ---------------------------------------------


@needs_runner
def test_generated_files_pass_under_the_runner(tmp_path):
    rules = {}
    for name, policy in POLICIES.items():
        rules.update({f'{name}_{r}': s for r, s in policy.items()})
    _, _, tests, directory = convert_policy(tmp_path, rules)
    results = regotest_run([directory])
    failed = [r.full_name for r in results if not r.passed]
    assert not failed
    assert len(results) == sum(len(t.cases) for t in tests.values())


MUTATED = {
    'admin': 'role:admin or is_admin:True',
    'reader': 'role:reader and project_id:%(project_id)s',
    'r': 'rule:admin or (role:reader and system_scope:all) or '
    "(role:member and 'PRIMARY':%(zone)s and not None:%(owner)s) or "
    'user_id:%(owner)s',
    'dup': '(role:service and system_scope:all) or rule:reader or '
    '(role:service and system_scope:all)',
}


def _mutant_decisions_differ(table, conv, directory, m, compiled, tmp):
    """Whether the mutated module, in place, decides differently from
    oslo.policy's original rule on the differential inputs."""
    copy_dir = str(tmp)
    shutil.copytree(directory, copy_dir)
    for rel, text in mutants.module_files(compiled).items():
        with open(os.path.join(copy_dir, rel), 'w') as f:
            f.write(text)
    rego = RegoPolicy(copy_dir)
    enforcer = differential.enforcer_for(table)
    for creds, target in differential.rule_inputs(table, m.rule):
        try:
            doc = inputs.build_input(creds, target, m.rule)
        except inputs.UnrepresentableInput:
            continue
        want = differential.oslo_decision(enforcer, m.rule, creds, target)
        if rego.evaluate(m.rule, doc) is not want:
            return True
    return False


@needs_runner
def test_mutated_rules_fail_their_generated_tests(tmp_path):
    table, conv, tests, directory = convert_policy(tmp_path, MUTATED)
    compiler = mutants.Compiler(table, conv.prefix)
    every = str(tmp_path / 'mutants')
    mutated = {}
    for name in table.rules:
        for m in mutants.mutants(table, name):
            root = f'mutant_{len(mutated)}'
            compiled = compiler.compile(m)
            for rel, text in mutants.namespaced(
                root, compiled, tests[name]
            ).items():
                path = os.path.join(every, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'w') as f:
                    f.write(text)
            mutated[root] = (m, compiled)
    kinds = {m.kind for m, _ in mutated.values()}
    assert kinds == {'drop_branch', 'flip_role', 'change_literal'}
    results = regotest_run([directory, every])
    assert not [r for r in results if r.error]
    caught = {r.package.split('.')[1] for r in results if r.failed}
    assert 'svc' not in caught  # the original passes
    semantic = {
        root
        for root, (m, compiled) in mutated.items()
        if root in caught
        or _mutant_decisions_differ(
            table, conv, directory, m, compiled, tmp_path / root
        )
    }
    assert semantic - caught == set()
    print(
        f'{len(mutated)} mutants, {len(semantic)} decide differently, '
        f'{len(caught)} caught'
    )
    # The equivalent ones: None and 'None' print alike; a duplicate.
    assert {mutated[r][0].description for r in set(mutated) - semantic} == {
        "None:%(owner)s -> 'None':%(owner)s",
        'drop (role:service and system_scope:all)',
        # The other copy of the branch still allows "all"; "allx" is a
        # value no differential input holds.
        'system_scope:all -> system_scope:allx',
    }
