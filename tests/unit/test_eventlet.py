"""The embedded driver in an eventlet-monkey-patched process.

Many OpenStack services still run under eventlet; the interpreter pool
must hand each greenthread its own interpreter.  Runs in a subprocess,
since monkey-patching is process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from oslo_opa.convert import convert
from tests import corpus

pytest.importorskip('eventlet')

SCRIPT = textwrap.dedent(
    """
    import json, random, sys, warnings
    warnings.simplefilter('ignore')
    import eventlet
    eventlet.monkey_patch()
    from oslo_opa import decider

    out = sys.argv[1]
    rng = random.Random(3)
    rules = ['admin_required', 'identity:get_project', 'identity:get_user',
             'identity:list_projects', 'identity:create_project']
    requests = []
    for i in range(1500):
        creds = {'roles': rng.choice([['admin'], ['reader'], ['Member']]),
                 'project_id': rng.choice(['p1', 'p2']),
                 'user_id': rng.choice(['u1', 'u2'])}
        target = {'target.project.id': rng.choice(['p1', 'p2']),
                  'target.user.id': rng.choice(['u1', 'u2'])}
        requests.append((rng.choice(rules), target, creds))
    d = decider.load(out, cache_size=0)
    serial = [d.decide(r, t, c) for r, t, c in requests]
    pool = eventlet.GreenPool(64)
    green = list(pool.imap(lambda req: d.decide(*req), requests))
    print(json.dumps({'serial': serial, 'green': green}))
    """
)


def test_greenthreads_decide_like_one_thread(tmp_path):
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[corpus.policy_file('keystone')])
    proc = subprocess.run(
        [sys.executable, '-c', SCRIPT, out],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, 'PYTHONWARNINGS': 'ignore'},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result['green']) == 1500
    assert result['green'] == result['serial']
    # Both decisions occurred, so equal lists say something.
    assert 0 < sum(result['serial']) < 1500
