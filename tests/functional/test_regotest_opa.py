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

"""``oslo-opa test`` (regopy) and ``opa test`` agree, test by test.

Both run on the same paths with ``--format json``; every test must be
reported by both, at the same place, with the same outcome (pass, fail,
skip, error) and the same test cases, and both commands must exit with
the same status.  The paths:

* the helper library and its own tests (oslo_opa/rego/oslo_opa);
* keystone converted by ``oslo-opa convert``, as it is (manifest.json and
  policy.yaml are data to both; any ``*_test.rego`` the conversion writes
  is run), then with tests generated here for every rule, also with
  every expression switching overlays off (``with data.oslo_opa.overlay
  as {}``) beside an overlay that denies every rule;
* tests/fixtures/regotest/tricky: failing, erring, skipped tests,
  non-boolean values, ``with data``, data files, duplicate names,
  constants bound to variables...; also with ``--ignore`` patterns;
  print() output (print_test.rego), which the JSON carries, also
  compared as text, with and without ``-v``;
* tests/fixtures/regotest/withdata: ``with data.P as C``, P an
  overlay-like package loaded or data no module defines, the cases
  oslo-opa test evaluates in a variant of the modules and data and those
  it leaves to regopy.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess

import pytest

from oslo_opa import cli, regotest
from oslo_opa.regotest import loader as regotest_loader
from tests import corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
LIBRARY = os.path.join(REPO, 'oslo_opa', 'rego', 'oslo_opa')
TRICKY = os.path.join(REPO, 'tests', 'fixtures', 'regotest', 'tricky')
WITH_DATA = os.path.join(REPO, 'tests', 'fixtures', 'regotest', 'withdata')
PRINTS = [
    os.path.join(TRICKY, 'print_test.rego'),
    os.path.join(TRICKY, 'policy.rego'),
]
OPA_TIMEOUT = 600
# Credentials the generated tests try on every rule.
CREDENTIALS = [
    {'roles': ['admin'], 'project_id': 'p1', 'user_id': 'u1'},
    {'roles': ['reader'], 'project_id': 'p1', 'system_scope': 'all'},
    {'roles': ['Member'], 'project_id': 'p2', 'domain_id': 'd1'},
    {'roles': ['manager', 'member'], 'user_id': 'u1', 'domain_id': 'd1'},
    {'roles': [], 'is_admin': True},
    {'roles': 'admin'},
]


def _normal(record):
    """A result as both report it: durations and error texts differ."""
    out = {k: v for k, v in record.items() if k != 'duration'}
    if 'error' in out:
        out['error'] = True
    return out


def _opa(opa_bin, paths):
    proc = subprocess.run(
        [opa_bin, 'test', '--format', 'json', *paths],
        capture_output=True,
        text=True,
        timeout=OPA_TIMEOUT,
        check=False,
    )
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _ours(capsys, paths):
    capsys.readouterr()
    code = cli.main(['test', '--format', 'json', *paths])
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    return code, json.loads(out)


def assert_agree(opa_bin, capsys, paths):
    """Compare; return the outcomes counted, for the caller to check the
    comparison was not vacuous."""
    opa_code, opa = _opa(opa_bin, paths)
    our_code, ours = _ours(capsys, paths)
    theirs = {(r['package'], r['name']): _normal(r) for r in opa}
    mine = {(r['package'], r['name']): _normal(r) for r in ours}
    assert len(theirs) == len(opa), 'opa reported a test twice'
    assert len(mine) == len(ours), 'a test is reported twice'
    differ = [
        f'{k[0]}.{k[1]}: opa {theirs.get(k)} / oslo-opa {mine.get(k)}'
        for k in sorted(set(theirs) | set(mine))
        if theirs.get(k) != mine.get(k)
    ]
    assert not differ, '\n'.join(differ)
    assert our_code == opa_code
    counts = {'pass': 0, 'fail': 0, 'skip': 0, 'error': 0}
    for r in theirs.values():
        outcome = next((k for k in ('fail', 'skip', 'error') if r.get(k)), '')
        counts[outcome or 'pass'] += 1
    return counts


def test_the_library_suite(opa_bin, capsys):
    counts = assert_agree(opa_bin, capsys, [LIBRARY])
    assert counts['pass'] >= 10
    assert counts['pass'] == sum(counts.values())


def test_the_tricky_set(opa_bin, capsys):
    counts = assert_agree(opa_bin, capsys, [TRICKY])
    # Each outcome is represented, so none can be mistaken for another.
    assert counts['pass'] >= 15
    assert counts['fail'] >= 8
    assert counts['error'] >= 2
    assert counts['skip'] == 1


def test_ignore_patterns(opa_bin, capsys):
    plain = assert_agree(opa_bin, capsys, [TRICKY])
    # cfg/ is not loaded: the test reading its data fails.
    argv = ['--ignore', '*.yml', '--ignore', 'nothing,c?g', TRICKY]
    ignored = assert_agree(opa_bin, capsys, argv)
    assert ignored['fail'] == plain['fail'] + 1
    assert sum(ignored.values()) == sum(plain.values())


def _patched(paths):
    """The tests whose ``with data`` modifiers run in a variant."""
    modules, data = regotest_loader._load(paths)
    regotest._name_tests(modules)
    regotest._split_tests(modules, data)
    return [t.name for m in modules for t in m.tests if t.patch]


def test_with_data_modifiers(opa_bin, capsys):
    counts = assert_agree(opa_bin, capsys, [WITH_DATA])
    assert counts['pass'] >= 15
    assert counts['fail'] >= 5
    # Not vacuous: both ways of evaluating the modifiers were compared.
    patched = set(_patched([WITH_DATA]))
    assert {'test_overlay_off_allows', 'test_data_file_replaced'} <= patched
    assert 'test_function_below' not in patched
    assert 'test_different_variants' not in patched


def test_print_output_in_json(opa_bin, capsys):
    counts = assert_agree(opa_bin, capsys, PRINTS)
    assert counts == {'pass': 4, 'fail': 3, 'skip': 0, 'error': 1}
    _, ours = _ours(capsys, PRINTS)
    printed = {r['name'] for r in ours if 'output' in r}
    # The comparison saw output from each kind of test.
    assert {'test_prints_and_passes', 'test_prints_and_fails'} <= printed
    assert 'test_prints_then_errors' in printed
    assert 'test_quiet' not in printed


_HEADER = re.compile(r'^\S+:[0-9]+:$')
_DURATION = re.compile(r' \([0-9.]+[µmn]?s\)$')
_HL = '-' * 80


def _blocks(text):
    """opa test's text: each test's lines (header first, durations
    blanked) by header, and the summary.  An error's message (after the
    block's last empty line) differs in words, and verbose failures'
    traces are OPA's own: both are left out."""
    lines = text.split('\n')
    head = lines.index(_HL) if _HL in lines else len(lines)
    blocks, current = {}, None
    for line in lines[:head]:
        if _HEADER.match(line):
            current = blocks.setdefault(line, [])
        assert current is not None, text
        current.append(_DURATION.sub(' (_)', line))
    for key, block in blocks.items():
        if block[1].endswith(': ERROR (_)') and '' in block:
            last = len(block) - block[::-1].index('')
            blocks[key] = block[:last]
    summary = lines[len(lines) - 1 - lines[::-1].index(_HL) :]
    return blocks, summary


def _text(opa_bin, capsys, argv):
    opa = subprocess.run(
        [opa_bin, 'test', *argv],
        capture_output=True,
        text=True,
        timeout=OPA_TIMEOUT,
        check=False,
    )
    capsys.readouterr()
    code = cli.main(['test', *argv])
    ours = capsys.readouterr().out
    assert code == opa.returncode == 2, opa.stderr
    return _blocks(opa.stdout), _blocks(ours)


@pytest.mark.parametrize('verbose', [False, True])
def test_print_output_as_text(opa_bin, capsys, verbose):
    argv = ['-v', *PRINTS] if verbose else PRINTS
    (theirs, opa_sum), (mine, our_sum) = _text(opa_bin, capsys, argv)
    assert mine == theirs
    assert our_sum == opa_sum
    shown = '\n'.join(line for block in theirs.values() for line in block)
    # Not vacuous: output of failing tests, and of passing ones with -v.
    assert '  failing' in shown
    assert ('  passing 1 2.5 true null' in shown) is verbose
    assert len(theirs) == (8 if verbose else 4)


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('regotest') / 'keystone')
    code = cli.main(
        [
            'convert',
            '--policy-file',
            corpus.policy_file('keystone'),
            '-o',
            out,
        ]
    )
    assert code == 0
    return out


def test_the_converted_directory_as_it_is(opa_bin, capsys, keystone):
    # manifest.json and policy.yaml load as data in both; the tests the
    # conversion writes, if it writes any, must agree too.
    assert_agree(opa_bin, capsys, [keystone])


def _generated_tests(directory, out):
    """A test module per rule of a converted directory, in its own
    package, with the forms a test writer uses."""
    with open(os.path.join(directory, 'manifest.json'), encoding='utf-8') as f:
        rules = json.load(f)['rules']
    rnd = random.Random(7)
    os.makedirs(out)
    for n, (name, entry) in enumerate(sorted(rules.items())):
        allow = f'data.{entry["package"]}.allow'
        lines = [f'package regotest_generated.r{n}', '']
        for i, creds in enumerate(rnd.sample(CREDENTIALS, 4)):
            target = {
                k: rnd.choice(['p1', 'u1', 'd1']) for k in entry['target_keys']
            }
            doc = {'credentials': creds, 'target': target, 'rule': name}
            c, t = json.dumps(creds), json.dumps(target)
            form = (i + n) % 5
            if form == 0:
                body = f'{{\n\t{allow} with input as {json.dumps(doc)}\n}}'
            elif form == 1:
                body = f'not {allow} with input as {json.dumps(doc)}'
            elif form == 2:
                body = (
                    f'{{\n\tnot {allow} with input.credentials as {c} '
                    f'with input.target as {t}\n\t{allow} == false\n}}'
                )
            elif form == 3:
                body = (
                    f'{{\n\t{allow} with input.credentials as {c} '
                    f'with input.target as {t}\n}}'
                )
            else:
                # Constants bound to variables, one used twice.
                body = (
                    f'{{\n\tinp := {json.dumps(doc)}\n\tcreds := {c}\n'
                    f'\t{allow} with input as inp\n'
                    f'\t{allow} with input.credentials as creds '
                    f'with input.target as {t} '
                    f'with input.rule as {json.dumps(name)}\n'
                    f'\tnot {allow} == false with input as inp\n}}'
                )
            lines.append(f'test_{i} if {body}\n')
        if n < 2:
            # Expressions sharing a variable: compiled as written.
            lines.append(
                f'test_shared if {{\n\tx := {allow} with input as '
                f'{json.dumps({"credentials": CREDENTIALS[0]})}\n'
                '\tis_boolean(x)\n}\n'
            )
        with open(os.path.join(out, f'r{n}_test.rego'), 'w') as f:
            f.write('\n'.join(lines))


def test_generated_tests_on_the_converted_directory(
    opa_bin, capsys, keystone, tmp_path
):
    extra = str(tmp_path / 'tests')
    _generated_tests(keystone, extra)
    counts = assert_agree(opa_bin, capsys, [keystone, extra])
    assert counts['pass'] >= 100
    assert counts['fail'] >= 100
    assert counts['error'] == 0


_OVERLAY_OFF = ' with data.oslo_opa.overlay as {}'


def _expression(line):
    """line is an expression of a test (not a binding) that does not
    switch overlays off yet: in braces, or a brace-less body with a
    modifier."""
    if _OVERLAY_OFF in line:
        return False
    if line.startswith('\t'):
        return ':=' not in line
    return line.startswith('test_') and ' with ' in line


def _overlays_off(directory):
    """Switch overlays off in every expression of every test module under
    directory but a binding's (the conversion's own tests already do)."""
    for root, _, names in os.walk(directory):
        for name in names:
            if not name.endswith('_test.rego'):
                continue
            path = os.path.join(root, name)
            with open(path, encoding='utf-8') as f:
                lines = f.read().split('\n')
            lines = [
                line + _OVERLAY_OFF if _expression(line) else line
                for line in lines
            ]
            with open(path, 'w', encoding='utf-8') as f:
                f.write('\n'.join(lines))


def test_generated_tests_with_overlays_off(
    opa_bin, capsys, keystone, tmp_path
):
    # Beside an overlay denying every rule, tests switching overlays off
    # have the outcomes they have without it.
    extra = str(tmp_path / 'tests')
    _generated_tests(keystone, extra)
    plain = assert_agree(opa_bin, capsys, [keystone, extra])
    converted = str(tmp_path / 'keystone')
    shutil.copytree(keystone, converted)
    _overlays_off(converted)
    _overlays_off(extra)
    overlay = tmp_path / 'overlay' / 'deny_all.rego'
    overlay.parent.mkdir()
    overlay.write_text(
        'package oslo_opa.overlay\n\ndeny["*"] contains "off" if true\n',
        encoding='utf-8',
    )
    paths = [converted, extra, str(overlay.parent)]
    assert assert_agree(opa_bin, capsys, paths) == plain
    # Not vacuous: most tests ran in the variant without the overlay.
    assert len(_patched(paths)) >= 0.9 * sum(plain.values())
