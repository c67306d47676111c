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

"""The converted corpus in the real OPA: it compiles, and it decides
exactly what oslo.policy decides.

* every service's converted ``policy.yaml`` (and the helper library),
  its generated ``_test.rego`` modules included, passes ``opa check
  --strict`` and is ``opa fmt`` clean;
* for every rule of every service, INPUTS_PER_RULE generated inputs are
  decided by oslo.policy and by OPA, and the decisions must all agree;
* the same comparison reports a deliberately broken module, and refuses
  a batch whose results are missing or not booleans;
* the legacy JSON form of each policy converts to the same rules.

No ``opa eval`` per decision: a service's cases go into a data file and
a small harness module evaluates each case's rule's ``allow`` with the
case as ``input`` (large services are split into a few such batches run
in parallel).  The batch must answer exactly one boolean per case.  The
converted directory is loaded whole with ``-d DIR`` (manifest.json and
policy.yaml included), as an operator would load it.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest
import yaml

from oslo_opa import inputs
from oslo_opa.convert import convert, emit, load_rule_table
from oslo_opa.convert.rules import RuleTable
from tests import differential
from tests.corpus import SERVICES, policy_file
from tests.differential import INPUTS_PER_RULE
from tests.functional.conftest import run_opa

OPA_TIMEOUT = 600
LIBRARY_DIR = os.path.join(
    os.path.dirname(__file__), '..', '..', 'oslo_opa', 'rego'
)
# Names no policy file of the corpus uses at the top of ``data`` (a
# converted directory's policy.yaml and manifest.json load there too).
HARNESS_PACKAGE = 'oslo_opa_conformance_harness'
CASES_KEY = 'oslo_opa_conformance_cases'
HARNESS = """package %(package)s

results := [[i, allow] |
	some i, c in data.%(cases)s
	allow := data.%(prefix)s[c.slug].allow with input as c.input
]
"""
MAX_REPORTED = 20
# Parallel opa eval processes per batch, and the least cases each.
MAX_JOBS = max(1, min(os.cpu_count() or 1, 4))
MIN_CHUNK = 4000


class BatchError(AssertionError):
    """OPA's answer to a batch is not one boolean per case."""


@dataclasses.dataclass
class Converted:
    """One service's policy.yaml, converted."""

    service: str
    directory: str
    table: RuleTable
    manifest: dict[str, Any]

    @property
    def prefix(self) -> str:
        return self.manifest['package_prefix']

    def slug(self, rule: str) -> str:
        package = self.manifest['rules'][rule]['package']
        prefix, _, slug = package.rpartition('.')
        assert prefix == self.prefix, package
        return slug


@dataclasses.dataclass
class Case:
    rule: str
    creds: dict[str, Any]
    target: dict[str, Any]
    expected: bool


class _Corpus:
    """Converts each service on first use, once per module."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._done: dict[str, Converted] = {}

    def __getitem__(self, service: str) -> Converted:
        if service not in self._done:
            path = policy_file(service)
            directory = os.path.join(self.root, service)
            conv = convert(output_dir=directory, policy_files=[path])
            assert not conv.warnings, conv.warnings
            with open(os.path.join(directory, emit.MANIFEST)) as f:
                manifest = json.load(f)
            table = load_rule_table(policy_files=[path])
            assert list(manifest['rules']) == list(table.rules)
            self._done[service] = Converted(
                service, directory, table, manifest
            )
        return self._done[service]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return _Corpus(str(tmp_path_factory.mktemp('converted')))


def _opa(opa_bin: str, *args: str) -> subprocess.CompletedProcess:
    return run_opa(opa_bin, *args, timeout=OPA_TIMEOUT)


def _assert_check_and_fmt(opa_bin: str, directory: str) -> None:
    proc = _opa(opa_bin, 'check', '--strict', directory)
    assert proc.returncode == 0, (
        f'opa check --strict {directory} failed '
        f'(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}'
    )
    proc = _opa(opa_bin, 'fmt', '--list', directory)
    assert proc.returncode == 0 and not proc.stdout.strip(), (
        f'opa fmt --list {directory} (exit {proc.returncode}) lists files '
        f'that are not formatted:\n{proc.stdout}{proc.stderr}'
    )


# --- OPA batches -----------------------------------------------------------


def write_batch(
    workdir: str, prefix: str, cases: list[tuple[str, dict[str, Any]]]
) -> tuple[str, str]:
    """Write the harness module and the cases file; return their paths.

    cases: (slug, input document) pairs.
    """
    os.makedirs(workdir, exist_ok=True)
    harness = os.path.join(workdir, 'harness.rego')
    with open(harness, 'w', encoding='utf-8') as f:
        f.write(
            HARNESS
            % {
                'package': HARNESS_PACKAGE,
                'cases': CASES_KEY,
                'prefix': prefix,
            }
        )
    data = os.path.join(workdir, 'cases.json')
    with open(data, 'w', encoding='utf-8') as f:
        json.dump(
            {CASES_KEY: [{'slug': s, 'input': doc} for s, doc in cases]}, f
        )
    return harness, data


def parse_results(
    returncode: int, stdout: str, stderr: str, count: int
) -> list[bool]:
    """OPA's decisions, checked to be exactly one boolean per case."""
    if returncode != 0:
        raise BatchError(
            f'opa eval failed (exit {returncode}):\n{stderr}{stdout[:4000]}'
        )
    try:
        value = json.loads(stdout)['result'][0]['expressions'][0]['value']
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BatchError(
            f'opa eval gave no results ({e!r}):\n{stdout[:4000]}'
        ) from e
    if not isinstance(value, list) or len(value) != count:
        size = len(value) if isinstance(value, list) else value
        raise BatchError(
            f'opa eval returned {size} results for {count} cases: a rule '
            f'was undefined for some input'
        )
    decisions = []
    for i, item in enumerate(value):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] != i
            or not isinstance(item[1], bool)
        ):
            raise BatchError(
                f'result {i} is {item!r}, not [{i}, <boolean>]: '
                f'allow is not a boolean'
            )
        decisions.append(item[1])
    return decisions


class _Eval:
    """One ``opa eval`` of a batch, running in the background."""

    def __init__(
        self,
        opa_bin: str,
        directory: str,
        prefix: str,
        cases: list[tuple[str, dict[str, Any]]],
        workdir: str,
        extra: tuple[str, ...] = (),
    ) -> None:
        harness, data = write_batch(workdir, prefix, cases)
        self.count = len(cases)
        self.stdout = os.path.join(workdir, 'stdout')
        self.stderr = os.path.join(workdir, 'stderr')
        with (
            open(self.stdout, 'wb') as out,
            open(self.stderr, 'wb') as err,
        ):
            self.proc = subprocess.Popen(
                [
                    opa_bin,
                    'eval',
                    '--format',
                    'json',
                    '-d',
                    directory,
                    '-d',
                    harness,
                    '-d',
                    data,
                    *[arg for path in extra for arg in ('-d', path)],
                    f'data.{HARNESS_PACKAGE}.results',
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def results(self) -> list[bool]:
        try:
            returncode = self.proc.wait(timeout=OPA_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BatchError(
                f'opa eval did not finish in {OPA_TIMEOUT}s'
            ) from None
        with open(self.stdout, encoding='utf-8') as f:
            stdout = f.read()
        with open(self.stderr, encoding='utf-8') as f:
            stderr = f.read()
        return parse_results(returncode, stdout, stderr, self.count)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def opa_decide(
    opa_bin: str,
    directory: str,
    prefix: str,
    cases: list[tuple[str, dict[str, Any]]],
    workdir: str,
    extra: tuple[str, ...] = (),
) -> list[bool]:
    """OPA's ``allow`` for every (slug, input); extra: more paths to load
    (overlays, data).

    One ``opa eval`` per chunk of at least MIN_CHUNK cases, up to
    MAX_JOBS of them at once (OPA evaluates a query on one core).
    """
    jobs = max(1, min(MAX_JOBS, len(cases) // MIN_CHUNK))
    size = max(1, -(-len(cases) // jobs))
    evals: list[_Eval] = []
    try:
        for k, start in enumerate(range(0, max(len(cases), 1), size)):
            evals.append(
                _Eval(
                    opa_bin,
                    directory,
                    prefix,
                    cases[start : start + size],
                    os.path.join(workdir, f'batch{k}'),
                    extra,
                )
            )
        decisions: list[bool] = []
        for ev in evals:
            decisions += ev.results()
        return decisions
    finally:
        for ev in evals:
            ev.kill()


def generate_cases(conv: Converted, rules=None) -> list[Case]:
    """INPUTS_PER_RULE cases per rule, decided by oslo.policy."""
    enforcer = differential.enforcer_for(conv.table)
    cases = []
    for rule in conv.table.rules if rules is None else rules:
        for creds, target in differential.rule_inputs(conv.table, rule):
            expected = differential.oslo_decision(
                enforcer, rule, creds, target
            )
            cases.append(Case(rule, creds, target, expected))
    return cases


def compare(
    opa_bin: str, conv: Converted, cases: list[Case], workdir: str
) -> tuple[list[tuple[Case, bool]], list[bool]]:
    """Decide cases in OPA; return (mismatches, OPA's decisions)."""
    docs = [
        (conv.slug(c.rule), inputs.build_input(c.creds, c.target, c.rule))
        for c in cases
    ]
    got = opa_decide(opa_bin, conv.directory, conv.prefix, docs, workdir)
    mismatches = [
        (c, g) for c, g in zip(cases, got, strict=True) if c.expected != g
    ]
    return mismatches, got


def report(service: str, mismatches: list[tuple[Case, bool]]) -> str:
    rules = sorted({c.rule for c, _ in mismatches})
    lines = [
        f'{service}: {len(mismatches)} decisions differ, in {len(rules)} '
        f'rules ({", ".join(rules[:10])}{", ..." if len(rules) > 10 else ""}'
        f'); the first {min(len(mismatches), MAX_REPORTED)}:'
    ]
    for case, got in mismatches[:MAX_REPORTED]:
        lines.append(
            f'  {service} {case.rule!r}: creds={case.creds!r} '
            f'target={case.target!r} expected(oslo.policy)={case.expected} '
            f'got(opa)={got}'
        )
    return '\n'.join(lines)


# --- the tests -------------------------------------------------------------


def test_library_check_and_fmt(opa_bin):
    _assert_check_and_fmt(opa_bin, os.path.abspath(LIBRARY_DIR))


@pytest.mark.parametrize('service', SERVICES)
def test_converted_check_and_fmt(opa_bin, corpus, service):
    conv = corpus[service]
    # The check covers the generated tests too: one module per rule.
    tests = [
        name
        for _, _, files in os.walk(conv.directory)
        for name in files
        if name.endswith('_test.rego')
    ]
    assert len(tests) == len(conv.manifest['rules'])
    _assert_check_and_fmt(opa_bin, conv.directory)


@pytest.mark.parametrize('service', SERVICES)
def test_opa_agrees_with_oslo_policy(opa_bin, corpus, service, tmp_path):
    conv = corpus[service]
    started = time.monotonic()
    cases = generate_cases(conv)
    generated = time.monotonic()
    workdir = str(tmp_path / 'opa')
    mismatches, got = compare(opa_bin, conv, cases, workdir)
    decided = time.monotonic()
    print(
        f'{service}: {len(conv.table.rules)} rules, {len(cases)} '
        f'decisions, {sum(got)} allowed; oslo.policy + inputs '
        f'{generated - started:.1f}s, opa eval {decided - generated:.1f}s'
    )
    assert len(cases) == INPUTS_PER_RULE * len(conv.table.rules)
    assert not mismatches, report(service, mismatches)
    # Not a vacuous agreement: both decisions occur.
    assert 0 < sum(got) < len(got), (sum(got), len(got))
    # The cases files are large; keep them only when the test fails.
    shutil.rmtree(workdir)


MUTATED_SERVICE = 'placement'
# The converted module's allow rules (an overlay's grant, the fast path,
# then state).
ALLOW_RULE = (
    'allow if {\n\tnot _denied\n\t_granted\n}\n\n'
    'allow if {\n\tnot _denied\n\tnot maybe_error\n\t_fast\n}\n\n'
    'allow if {\n\tnot _denied\n\tmaybe_error\n\tstate == "t"\n}'
)


def _mutate(
    opa_bin: str, conv: Converted, workdir: str, old: str, new: str
) -> tuple[Converted, str]:
    """A copy of conv in which one rule's module has old replaced by new.

    The rule is the first whose generated inputs oslo.policy denies at
    least once.
    """
    enforcer = differential.enforcer_for(conv.table)
    rule = next(
        rule
        for rule in conv.table.rules
        if not all(
            differential.oslo_decision(enforcer, rule, creds, target)
            for creds, target in differential.rule_inputs(conv.table, rule)
        )
    )
    directory = os.path.join(workdir, 'mutated')
    shutil.copytree(conv.directory, directory)
    module = os.path.join(directory, conv.manifest['rules'][rule]['module'])
    with open(module, encoding='utf-8') as f:
        text = f.read()
    assert text.count(old) == 1, text
    with open(module, 'w', encoding='utf-8') as f:
        f.write(text.replace(old, new))
    # Still a valid policy: only the decisions change.
    proc = _opa(opa_bin, 'check', '--strict', directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dataclasses.replace(conv, directory=directory), rule


def test_a_wrong_module_is_reported(opa_bin, corpus, tmp_path):
    conv = corpus[MUTATED_SERVICE]
    mutated, rule = _mutate(
        opa_bin, conv, str(tmp_path), ALLOW_RULE, 'allow := true'
    )
    cases = generate_cases(conv)
    mismatches, _ = compare(opa_bin, mutated, cases, str(tmp_path / 'b'))
    denied = [c for c in cases if c.rule == rule and not c.expected]
    assert denied
    # Exactly the mutated rule's denials now differ, and are reported.
    assert {c.rule for c, _ in mismatches} == {rule}
    assert [c for c, _ in mismatches] == denied
    assert all(got for _, got in mismatches)
    text = report(MUTATED_SERVICE, mismatches)
    assert f'{MUTATED_SERVICE} {rule!r}: creds=' in text
    assert 'expected(oslo.policy)=False got(opa)=True' in text


@pytest.mark.parametrize(
    ('old', 'new', 'message'),
    [
        # allow undefined where the rule fails: results go missing.
        ('default allow := false\n', '', 'results for'),
        # allow not a boolean.
        (ALLOW_RULE, 'allow := "t"', 'not a boolean'),
    ],
    ids=['undefined', 'not-boolean'],
)
def test_a_batch_cannot_pass_silently(
    opa_bin, corpus, tmp_path, old, new, message
):
    conv = corpus[MUTATED_SERVICE]
    mutated, rule = _mutate(opa_bin, conv, str(tmp_path), old, new)
    cases = generate_cases(conv, [rule])
    with pytest.raises(BatchError, match=message):
        compare(opa_bin, mutated, cases, str(tmp_path / 'b'))


@pytest.mark.parametrize('service', SERVICES)
def test_legacy_json_converts_to_the_same_rules(corpus, service, tmp_path):
    with open(policy_file(service), encoding='utf-8') as f:
        from_yaml = yaml.safe_load(f)
    with open(policy_file(service, 'legacy.json'), encoding='utf-8') as f:
        from_json = json.load(f)
    # The fixtures hold the same rules.
    assert from_json == from_yaml

    conv = corpus[service]
    directory = str(tmp_path / service)
    legacy = convert(
        output_dir=directory,
        policy_files=[policy_file(service, 'legacy.json')],
    )
    assert not legacy.warnings, legacy.warnings
    with open(os.path.join(directory, emit.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest['package_prefix'] == conv.prefix == service

    def check_strings(m):
        return [(name, e['check_str']) for name, e in m['rules'].items()]

    assert check_strings(manifest) == check_strings(conv.manifest)
    # And so the same output, file for file.
    assert manifest == conv.manifest
    diff = filecmp.dircmp(directory, conv.directory)
    assert _differing(diff) == [], _differing(diff)


def _differing(diff: filecmp.dircmp, where: str = '') -> list[str]:
    out = [os.path.join(where, n) for n in diff.left_only + diff.right_only]
    # dircmp compares shallowly (size and mtime); compare contents.
    _, mismatch, errors = filecmp.cmpfiles(
        diff.left, diff.right, diff.common_files, shallow=False
    )
    out += [os.path.join(where, n) for n in mismatch + errors]
    for name, sub in sorted(diff.subdirs.items()):
        out += _differing(sub, os.path.join(where, name))
    return out


def test_library_rego_tests_pass_under_opa_test(opa_bin):
    """The helper library's _test.rego suite, in the real OPA."""
    proc = subprocess.run(
        [opa_bin, 'test', '--format', 'json', LIBRARY_DIR],
        capture_output=True,
        text=True,
        check=False,
        timeout=OPA_TIMEOUT,
    )
    results = json.loads(proc.stdout or '[]')
    failed = [r['name'] for r in results if r.get('fail') or r.get('error')]
    assert proc.returncode == 0 and not failed, proc.stdout + proc.stderr
    assert len(results) >= 20
