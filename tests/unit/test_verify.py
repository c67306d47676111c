"""oslo-opa verify: oslo.policy against a converted or edited directory."""

from __future__ import annotations

import json
import os

from oslo_opa import cli
from tests import corpus


def _convert(tmp_path, service='glance'):
    out = str(tmp_path / 'opa')
    policy = corpus.policy_file(service)
    assert cli.main(['convert', '--policy-file', policy, '-o', out]) == 0
    return out, policy


def test_a_faithful_conversion_verifies(capsys, tmp_path):
    out, policy = _convert(tmp_path)
    capsys.readouterr()
    code = cli.main(['verify', out, '--policy-file', policy, '--inputs', '30'])
    stdout = capsys.readouterr().out
    assert code == 0
    assert '67 rules, 2010 decisions compared, 0 rules differ' in stdout


def test_an_edit_is_reported_with_a_minimal_input(capsys, tmp_path):
    out, policy = _convert(tmp_path)
    # The role check is in the rule's fast path, its own file.
    module = os.path.join(out, 'glance', 'context_is_admin.fast.rego')
    with open(module) as f:
        text = f.read()
    assert '"admin" in lib.roles_list_lower' in text
    with open(module, 'w') as f:
        f.write(
            text.replace(
                '"admin" in lib.roles_list_lower',
                '"reader" in lib.roles_list_lower',
            )
        )
    capsys.readouterr()
    code = cli.main(
        [
            'verify',
            out,
            '--policy-file',
            policy,
            '--inputs',
            '30',
            '--format',
            'json',
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    by_rule = {d['rule']: d for d in report['differences']}
    assert 'context_is_admin' in by_rule
    diff = by_rule['context_is_admin']
    # Shrunk to what the difference needs: the roles alone.
    assert diff['target'] == {}
    assert list(diff['creds']) == ['roles']
    assert len(diff['creds']['roles']) == 1
    assert diff['oslo_policy'] != diff['rego']
    # Rules that do not read the edited one still agree.
    assert 'get_image' not in by_rule or by_rule['get_image']['creds']


def test_a_rule_missing_from_the_directory_is_reported(capsys, tmp_path):
    out, _ = _convert(tmp_path)
    extra = tmp_path / 'more.yaml'
    with open(corpus.policy_file('glance')) as f:
        extra.write_text(f.read() + 'brand_new_rule: role:x\n')
    capsys.readouterr()
    code = cli.main(
        ['verify', out, '--policy-file', str(extra), '--inputs', '5']
    )
    stdout = capsys.readouterr().out
    assert code == 1
    assert 'DIFFERS  brand_new_rule: not in the converted policy' in stdout
