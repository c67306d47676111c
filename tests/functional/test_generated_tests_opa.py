# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The generated ``_test.rego`` files in the real OPA.

* for every corpus service, ``opa test DIR`` on the converted directory
  runs exactly the generated tests, and every one passes;
* every rule has a test that allows and one that denies, except the
  rules whose check string decides alone (``@``, ``!``, ``rule:`` to
  one of them), and those lack only the outcome they cannot have;
* the tests are not tests that pass for any policy: converted rules are
  mutated (an ``or`` alternative dropped, a role replaced, a literal
  changed; MUTANTS_PER_RULE of each rule's, drawn with a fixed seed,
  every service) and each mutant that decides differently from
  oslo.policy is caught by a test of its rule.  A mutant no test catches
  must decide exactly what oslo.policy decides on the differential
  inputs (tests/differential.py): it is equivalent, as far as those
  inputs can tell.  Each mutant and a copy of its rule's tests live
  under a package root of their own, so one ``opa test`` run covers
  them all;
* a directory whose data files clash (a rule named ``rules``) runs
  when the Rego directories are named, or with ``--ignore``, as
  documented;
* names and values that are not plain ASCII stay data-safe.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import subprocess
import time

import pytest

from oslo_opa import inputs
from oslo_opa.convert import convert, emit, load_rule_table, testgen
from oslo_opa.convert.compile import Conversion
from oslo_opa.convert.rules import RuleTable
from tests import differential, mutants
from tests.corpus import SERVICES, policy_file
from tests.functional.conftest import run_opa

OPA_TIMEOUT = 600
# Mutants per rule, drawn reproducibly from all of a rule's mutants.
MUTANTS_PER_RULE = 2
MUTATION_SEED = 'oslo-opa generated tests'
IGNORE = ['--ignore', emit.MANIFEST, '--ignore', emit.DELEGATION]
HARNESS_PACKAGE = 'oslo_opa_mutation_harness'
CASES_KEY = 'oslo_opa_mutation_cases'
# One clause per mutant: refs into data stay static.
HARNESS_CLAUSE = """
results["%(root)s"] := [allow |
	some c in data.%(cases)s.%(root)s
	allow := data.%(root)s.%(package)s.allow with input as c
]
"""


@dataclasses.dataclass
class Service:
    name: str
    directory: str
    table: RuleTable
    conv: Conversion
    tests: dict[str, testgen.RuleTests]


def _opa(opa_bin: str, *args: str) -> subprocess.CompletedProcess:
    return run_opa(opa_bin, *args, timeout=OPA_TIMEOUT)


def _opa_test(opa_bin: str, *paths: str, extra=()) -> list[dict]:
    proc = _opa(opa_bin, 'test', '--format', 'json', *extra, *paths)
    try:
        results = json.loads(proc.stdout)
    except ValueError:
        results = None
    assert isinstance(results, list), (
        f'opa test {paths} (exit {proc.returncode}) gave no results:\n'
        f'{proc.stdout[:4000]}{proc.stderr[:4000]}'
    )
    return results


@pytest.fixture(scope='module')
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp('generated')
    out = {}
    started = time.monotonic()
    for name in SERVICES:
        path = policy_file(name)
        directory = str(root / name)
        conv = convert(output_dir=directory, policy_files=[path])
        table = load_rule_table(policy_files=[path])
        out[name] = Service(
            name, directory, table, conv, testgen.generate(table, conv)
        )
    print(
        f'\nconverted {len(out)} services with their tests twice in '
        f'{time.monotonic() - started:.1f}s'
    )
    return out


@pytest.mark.parametrize('service', SERVICES)
def test_generated_tests_pass_under_opa_test(opa_bin, services, service):
    svc = services[service]
    # convert wrote what testgen generates (it is deterministic).
    for tests in svc.tests.values():
        with open(os.path.join(svc.directory, tests.path)) as f:
            assert f.read() == tests.render(), tests.path
    # The whole directory, as an operator would run it.
    results = _opa_test(opa_bin, svc.directory)
    bad = [r for r in results if r.get('fail') or r.get('error')]
    assert not bad, json.dumps(bad[:5], indent=1)
    expected = {
        (f'data.{t.package}', c.name)
        for t in svc.tests.values()
        for c in t.cases
    }
    assert {(r['package'], r['name']) for r in results} == expected
    print(f'\n{service}: {len(results)} generated tests pass')


@pytest.mark.parametrize('service', SERVICES)
def test_every_rule_allows_and_denies_unless_it_cannot(services, service):
    svc = services[service]
    constant = {}
    for name, tests in svc.tests.items():
        fixed = testgen.constant(svc.table, name)
        if fixed is None:
            assert tests.allows and tests.denies, (name, tests.not_built)
        else:
            # Only the outcome the check string can never have is missing.
            assert (tests.allows > 0, tests.denies > 0) == (fixed, not fixed)
            constant[name] = svc.conv.rules[name].check_str
    print(
        f'\n{service}: {len(svc.tests)} rules, '
        f'{sum(len(t.cases) for t in svc.tests.values())} tests, '
        f'{len(constant)} rules decide alone: {constant}'
    )


def _combined(svcs: list[Service], directory: str) -> None:
    """Every service's Rego (tests included) under one directory, the
    helper library once, no data files."""
    shutil.copytree(
        os.path.join(svcs[0].directory, 'oslo_opa'),
        os.path.join(directory, 'oslo_opa'),
    )
    for svc in svcs:
        top = svc.conv.prefix.split('.')[0]
        shutil.copytree(
            os.path.join(svc.directory, top), os.path.join(directory, top)
        )


def _write(directory: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)


def test_generated_tests_catch_mutants(opa_bin, services, tmp_path):
    started = time.monotonic()
    base = str(tmp_path / 'base')
    svcs = [services[s] for s in SERVICES]
    _combined(svcs, base)
    mutated: dict[str, tuple[Service, mutants.Mutant, dict[str, str]]] = {}
    for svc in svcs:
        compiler = mutants.Compiler(svc.table, svc.conv.prefix)
        for m in mutants.sample(svc.table, MUTANTS_PER_RULE, MUTATION_SEED):
            root = f'mutant_{len(mutated)}'
            compiled = compiler.compile(m)
            files = mutants.namespaced(root, compiled, svc.tests[m.rule])
            mutated[root] = (svc, m, files)
    assert mutated
    every = str(tmp_path / 'mutants')
    for _, _, files in mutated.values():
        _write(every, files)

    # One opa test run: the original tests, and every mutant's.
    results = _opa_test(opa_bin, base, every)
    errors = [r for r in results if r.get('error')]
    assert not errors, json.dumps(errors[:5], indent=1)
    by_root = collections.defaultdict(list)
    for r in results:
        by_root[r['package'].split('.')[1]].append(r)
    originals = [r for s in svcs for r in by_root.pop(s.conv.prefix)]
    assert originals and not any(r.get('fail') for r in originals)
    # Every mutant's tests ran; one failing test catches it.
    assert set(by_root) == set(mutated)
    caught = {
        root for root, rs in by_root.items() if any(r.get('fail') for r in rs)
    }

    # Whatever no test caught must decide as oslo.policy does.
    survivors = [root for root in mutated if root not in caught]
    differs = _differing_survivors(
        opa_bin, base, str(tmp_path / 'survivors'), mutated, survivors
    )

    kinds = collections.Counter(m.kind for _, m, _ in mutated.values())
    caught_kinds = collections.Counter(mutated[r][1].kind for r in caught)
    print(
        f'\nmutants: {len(mutated)} {dict(kinds)}; caught '
        f'{len(caught)} {dict(caught_kinds)}; not caught {len(survivors)}, '
        f'of which decide differently from oslo.policy on the '
        f'differential inputs: {len(differs)}; '
        f'{time.monotonic() - started:.1f}s'
    )
    for root in survivors:
        svc, m, _ = mutated[root]
        print(f'  equivalent: {svc.name} {m.rule!r}: {m.description}')
    assert not differs, '\n'.join(
        f'{mutated[r][0].name} {mutated[r][1].rule!r}: '
        f'{mutated[r][1].description}: {why}'
        for r, why in differs.items()
    )


def _package(entry) -> str:
    svc, m, _ = entry
    return svc.conv.rules[m.rule].package


def _differing_survivors(opa_bin, base, directory, mutated, survivors):
    """root -> a differing input, for each survivor that decides unlike
    oslo.policy's original rule on the differential inputs (and on the
    rule's generated inputs)."""
    cases: dict[str, list[dict]] = {}
    expected: dict[str, list[bool]] = {}
    for root in survivors:
        svc, m, files = mutated[root]
        _write(directory, files)
        enforcer = differential.enforcer_for(svc.table)
        pairs = differential.rule_inputs(svc.table, m.rule)
        pairs += [(c.creds, c.target) for c in svc.tests[m.rule].cases]
        for creds, target in pairs:
            try:
                doc = inputs.build_input(creds, target, m.rule)
            except inputs.UnrepresentableInput:
                continue
            cases.setdefault(root, []).append(doc)
            expected.setdefault(root, []).append(
                differential.oslo_decision(enforcer, m.rule, creds, target)
            )
    if not cases:
        return {}
    with open(os.path.join(directory, 'harness.rego'), 'w') as f:
        f.write(f'package {HARNESS_PACKAGE}\n')
        for root in cases:
            f.write(
                HARNESS_CLAUSE
                % {
                    'cases': CASES_KEY,
                    'root': root,
                    'package': _package(mutated[root]),
                }
            )
    data = str(directory) + '-cases.json'
    with open(data, 'w', encoding='utf-8') as f:
        json.dump({CASES_KEY: cases}, f)
    proc = _opa(
        opa_bin,
        'eval',
        '--format',
        'json',
        '--ignore',
        '*_test.rego',
        '-d',
        base,
        '-d',
        directory,
        '-d',
        data,
        f'data.{HARNESS_PACKAGE}.results',
    )
    assert proc.returncode == 0, proc.stdout[:4000] + proc.stderr[:4000]
    got = json.loads(proc.stdout)['result'][0]['expressions'][0]['value']
    differs = {}
    for root, wants in expected.items():
        assert len(got[root]) == len(wants), root
        for doc, want, allow in zip(
            cases[root], wants, got[root], strict=True
        ):
            if allow is not want:
                differs[root] = f'oslo.policy {want}, mutant {allow} on {doc}'
                break
    return differs


# --- whole directories --------------------------------------------------

AWKWARD = {
    # Names, roles, keys and literals that must not reach Rego raw.
    'r\u00f4le:\u00fcn\u00efcode': 'role:Adm\u00efn or \'x"y\':%(k"ey)s',
    'with space': 'role:a\\b and project_id:%(target."id")s',
    'if': 'role:in or not role:not',
    'default': 'r\u00e9gion.\u00e9:%(t\u00e9\\st)s and role:"}||true#',
    'rules': '@',
    'version': '!',
    'keys': 'is_admin:True or (role:x and user_id:%(input)s)',
}


def test_awkward_names_stay_data_safe(opa_bin, tmp_path):
    policy = tmp_path / 'awk.policy.json'
    policy.write_text(json.dumps(AWKWARD), encoding='utf-8')
    directory = str(tmp_path / 'awk')
    conv = convert(output_dir=directory, policy_files=[str(policy)])
    table = load_rule_table(policy_files=[str(policy)])
    tests = testgen.generate(table, conv)
    paths = [os.path.join(directory, t.path) for t in tests.values()]
    proc = _opa(opa_bin, 'check', '--strict', *IGNORE, directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _opa(opa_bin, 'fmt', '--list', *paths)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout
    # Rule names "rules" and "version" clash with manifest.json's keys
    # once OPA loads the data files: as documented, name the Rego
    # directories (or --ignore both files).
    proc = _opa(opa_bin, 'test', directory)
    assert proc.returncode != 0 and 'merge error' in proc.stdout + proc.stderr
    results = _opa_test(
        opa_bin,
        os.path.join(directory, 'oslo_opa'),
        os.path.join(directory, conv.prefix),
    )
    assert len(results) == len(_opa_test(opa_bin, directory, extra=IGNORE))
    assert not [r for r in results if r.get('fail') or r.get('error')]
    assert len(results) == sum(len(t.cases) for t in tests.values())
    for name, t in tests.items():
        fixed = testgen.constant(table, name)
        assert (t.allows > 0, t.denies > 0) == (
            fixed is not False,
            fixed is not True,
        ), name
