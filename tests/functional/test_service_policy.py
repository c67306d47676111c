"""A real service's own policy tests, unchanged, natively and through Rego.

``tools/service_policy_tests.py`` (``tox -e service``) installs cinder
from PyPI into a cached venv and runs its policy unit tests twice with
stestr: natively, then with every decision made by the converted Rego
(``RegoEnforcement(shadow=True)``).  The outcomes must be identical test
by test, Rego must have decided, and shadow mode must have found no
difference.  Without PyPI (and no cached venv) the test is skipped,
unless ``OSLO_OPA_REQUIRE_OPA=1`` (as in CI), where it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.functional.conftest import REPO_ROOT, skip_unless_required

SCRIPT = REPO_ROOT / 'tools' / 'service_policy_tests.py'
# The script's exit status when it must build the venv and PyPI is
# unreachable.
NO_INDEX_EXIT = 3
# A cold venv takes one to two minutes to install, each pass one to two:
# a bound well under CI's budget.
TIMEOUT = 10 * 60


def test_cinders_policy_tests_decide_the_same_through_rego(tmp_path):
    summary_path = tmp_path / 'summary.json'
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), '--json', str(summary_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode == NO_INDEX_EXIT:
        skip_unless_required(
            f'PyPI is unreachable: {SCRIPT.name} cannot install cinder'
        )
    output = f'{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}'
    assert proc.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    assert summary['problems'] == [], output
    assert summary['tests'] > 500, output
    assert summary['statuses'] == {'success': summary['tests']}, output
    assert summary['tests_deciding'] == summary['tests'], output
    assert summary['decisions'] > 0, output
    assert summary['shadow_differences'] == 0, output
    # Shown with -s or -rA: the cost of deciding through Rego.
    print(proc.stdout.strip().splitlines()[-1])
