"""A policy that does not compile is reported once, where it can be
acted on: the load logs every error as file:row:col, and each decision
it denies says so in one short line pointing at the first error."""

from __future__ import annotations

import logging
import os

from oslo_opa import decider
from tests.unit.test_runtime import convert_rules


def test_a_compile_error_is_logged_once_and_each_denial_is_short(
    tmp_path, caplog
):
    out, _ = convert_rules(tmp_path, {'r': 'role:member', 's': 'rule:r'})
    path = os.path.join(out, 'svc', 'r.rego')
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    row = lines.index('default allow := false') + 2
    lines.insert(row - 1, 'this is unclosed {')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    caplog.set_level(logging.WARNING, logger='oslo_opa')
    d = decider.load(out, cache_size=0)
    try:
        for _ in range(3):
            assert d.decide('s', {}, {'roles': ['member']}) is False
    finally:
        d.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
    denials = [
        r.getMessage() for r in caplog.records if r.levelname == 'WARNING'
    ]
    assert len(errors) == 1, errors
    assert f'svc/r.rego:{row}:' in errors[0]
    assert len(denials) == 3
    for line in denials:
        assert line.startswith("oslo.opa: rule 's': the policy could not load")
        assert f'svc/r.rego:{row}:' in line and 'logged at load' in line
        # The first error only, not the engine's whole report.
        assert line.count('svc/r.rego') == 1
        assert len(line) < 160, line
