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

"""``data.oslo_opa.lib.py_lower`` in the real OPA against str.lower().

* every code point from U+0000 to U+10FFFF (surrogates excepted) alone;
* the code points tests/unit/test_casefold.py finds interesting around a
  capital sigma, and every CONTEXT_STRIDE-th other one;
* the exact and long cases of the unit tests, and casefold_test.rego
  under ``opa test``.

The strings go to one ``opa eval`` per batch (a few batches run at
once), which answers the indices of the mismatches.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys

from tests.unit import test_casefold as unit

CASEFOLD = str(unit.CASEFOLD)
CASEFOLD_TEST = str(unit.CASEFOLD.with_name('casefold_test.rego'))
QUERY = (
    '[k | some case in input.cases; [k, s, e] := case; '
    'not data.oslo_opa.lib.py_lower(s) == e]'
)
# Strings per opa eval (about 0.4 GB of OPA memory per 300000), and how
# many run at once.
BATCH = 300_000
PARALLEL = 2
CONTEXT_STRIDE = 29
OPA_TIMEOUT = 600

pytestmark = unit.pytestmark


def _eval(opa_bin, tmp_path, name, strings, expected):
    path = tmp_path / f'{name}.json'
    cases = [
        [k, s, e]
        for k, (s, e) in enumerate(zip(strings, expected, strict=True))
    ]
    with open(path, 'w', encoding='utf-8') as f:
        json.dump({'cases': cases}, f)
    proc = subprocess.run(
        [opa_bin, 'eval', '--format', 'json']
        + ['-d', CASEFOLD, '-i', str(path), QUERY],
        capture_output=True,
        text=True,
        timeout=OPA_TIMEOUT,
        check=False,
    )
    path.unlink()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)['result']
    assert len(result) == 1, proc.stdout[:1000]
    bad = result[0]['expressions'][0]['value']
    assert isinstance(bad, list), proc.stdout[:1000]
    return [strings[k] for k in bad]


def mismatches(opa_bin, tmp_path, strings, expected=None):
    """The strings whose py_lower in OPA is not their lower()."""
    if expected is None:
        expected = [s.lower() for s in strings]
    jobs = [
        (strings[i : i + BATCH], expected[i : i + BATCH])
        for i in range(0, len(strings), BATCH)
    ]
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(_eval, opa_bin, tmp_path, f'batch{n}', *job)
            for n, job in enumerate(jobs)
        ]
        return [s for f in futures for s in f.result()]


def assert_lower(opa_bin, tmp_path, strings):
    bad = mismatches(opa_bin, tmp_path, strings)
    assert not bad, f'{len(bad)} mismatches, first: {unit._describe(bad)}'


def test_harness_reports_mismatches(opa_bin, tmp_path):
    strings = ['A', 'B', 'Σ']
    expected = ['a', 'B', 'ς']
    assert mismatches(opa_bin, tmp_path, strings, expected) == ['B', 'Σ']


def test_every_code_point(opa_bin, tmp_path):
    everything = [
        chr(cp)
        for cp in range(sys.maxunicode + 1)
        if not 0xD800 <= cp <= 0xDFFF
    ]
    assert len(everything) == 1_112_064
    assert_lower(opa_bin, tmp_path, everything)


def test_code_points_in_sigma_contexts(opa_bin, tmp_path):
    interesting = unit.interesting_code_points()
    others = unit.sampled_code_points(interesting, CONTEXT_STRIDE, start=0)
    strings = [s for c in interesting for s in unit.sigma_contexts(c)]
    strings += [s for c in others for s in unit.sigma_contexts(c)[1:4]]
    assert_lower(opa_bin, tmp_path, strings)


def test_exact_and_long_cases(opa_bin, tmp_path):
    strings = [s for s, _ in unit.EXACT] + ['\x00', 'A\x00Σ', 'AΣ\x00']
    strings += unit.LONG_STRINGS
    assert_lower(opa_bin, tmp_path, strings)


def test_rego_tests(opa_bin):
    proc = subprocess.run(
        [opa_bin, 'test', CASEFOLD, CASEFOLD_TEST],
        capture_output=True,
        text=True,
        timeout=OPA_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
