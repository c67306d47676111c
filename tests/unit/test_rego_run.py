"""oslo_opa.testing.rego_run: a unittest suite, unchanged, through Rego."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SUITE = """
import unittest
from unittest import mock

from oslo_config import cfg
from oslo_policy import policy


class PolicyTest(unittest.TestCase):
    def setUp(self):
        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[])
        self.enforcer = policy.Enforcer(conf, policy_file='none.yaml')
        self.enforcer.register_defaults([
            policy.RuleDefault('get', 'role:reader'),
            policy.RuleDefault('wrong', 'role:admin'),
        ])

    def test_reader_gets(self):
        creds = {'roles': ['reader']}
        self.assertTrue(self.enforcer.enforce('get', {}, creds))

    def test_others_do_not(self):
        self.assertFalse(self.enforcer.enforce('get', {}, {'roles': []}))

    def test_a_difference_fails(self):
        self.enforcer.load_rules()
        # What a wrong conversion would decide.
        decider = self.enforcer.rules['wrong'].decider
        with mock.patch.object(decider, 'decide', return_value=True):
            self.enforcer.enforce('wrong', {}, {'roles': []})
"""


def test_every_test_runs_through_the_fixture(tmp_path):
    (tmp_path / 'suite_under_rego.py').write_text(textwrap.dedent(SUITE))
    env = dict(os.environ, OSLO_OPA_REGO_TOTALS=str(tmp_path / 'totals'))
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), *sys.path])
    proc = subprocess.run(
        [sys.executable, '-m', 'oslo_opa.testing.rego_run',
         '-m', 'unittest', '-v', 'suite_under_rego'],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    # The shadow difference fails its test (at cleanup); the others pass.
    assert 'FAIL: test_a_difference_fails' in proc.stderr
    assert 'FAILED (failures=1)' in proc.stderr, proc.stderr
    assert "'wrong': Rego True, oslo.policy False" in proc.stderr
    [written] = (tmp_path / 'totals').iterdir()
    totals = json.loads(written.read_text())
    assert totals['tests'] == 3
    assert totals['tests_deciding'] == 3
    assert totals['decisions'] == 3
    assert totals['differences'] == [['wrong', True, False]]
    assert totals['conversions'] == 1


def test_usage():
    proc = subprocess.run(
        [sys.executable, '-m', 'oslo_opa.testing.rego_run', 'x'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert 'usage:' in proc.stderr
