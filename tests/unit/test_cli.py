"""The oslo-opa command: outputs, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from oslo_opa import cli
from tests import corpus

EXAMPLES = os.path.join(os.path.dirname(__file__), '..', '..', 'examples')


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_writes_modules_manifest_and_delegation(capsys, tmp_path):
    out = tmp_path / 'out'
    code, stdout, err = run(
        capsys,
        'convert',
        '--policy-file',
        corpus.policy_file('glance'),
        '--output-dir',
        str(out),
    )
    assert code == 0, err
    assert 'converted 67 rules' in stdout
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['package_prefix'] == 'glance'
    entry = manifest['rules']['get_image']
    assert entry['query'] == 'data.glance.get_image.allow'
    assert entry['path'] == 'glance/get_image/allow'
    assert (out / entry['module']).is_file()
    delegation = yaml.safe_load((out / 'policy.yaml').read_text())
    assert delegation['get_image'] == 'opa:get_image'
    assert set(delegation) == set(manifest['rules'])
    assert (out / 'oslo_opa' / 'lib.rego').is_file()


def test_decide_prints_allow_and_deny_with_reason(capsys, tmp_path):
    out = str(tmp_path / 'ks')
    assert (
        cli.main(
            [
                'convert',
                '--policy-file',
                os.path.join(EXAMPLES, 'keystone', 'policy.yaml'),
                '-o',
                out,
            ]
        )
        == 0
    )
    capsys.readouterr()
    code, stdout, _ = run(
        capsys,
        'decide',
        out,
        '--requests',
        os.path.join(EXAMPLES, 'keystone', 'requests.json'),
    )
    lines = stdout.splitlines()
    assert code == 0
    assert lines[0].startswith('ALLOW  identity:get_project')
    assert lines[1].startswith('DENY   identity:get_project')
    code, stdout, _ = run(
        capsys,
        'decide',
        out,
        '--rule',
        'identity:get_project',
        '--creds',
        '{"roles": "reader", "project_id": "p"}',
        '--target',
        '{"target.project.id": "q"}',
        '--fail-on-deny',
    )
    assert code == 1
    assert 'DENY' in stdout


@pytest.mark.parametrize(
    'argv',
    [
        ['convert', '--bogus', '-o', 'x'],
        ['convert', '--policy-file', 'p.yaml'],
        ['frobnicate'],
        [],
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    _, err = capsys.readouterr()
    assert e.value.code == 2
    assert err.startswith('oslo-opa')
    assert len(err.strip().splitlines()) == 1, err


def test_convert_without_inputs(capsys, tmp_path):
    code, _, err = run(capsys, 'convert', '-o', str(tmp_path / 'o'))
    assert code == 2
    assert err.strip().count('\n') == 0
    assert 'needs --policy-file' in err


def test_unreadable_and_malformed_files(capsys, tmp_path):
    code, _, err = run(
        capsys, 'convert', '--policy-file', str(tmp_path / 'nope'), '-o', 'x'
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert 'nope' in err
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: role:x\nb: [\n')
    code, _, err = run(capsys, 'convert', '--policy-file', str(bad), '-o', 'x')
    assert code == 2
    assert f'{bad}:3:' in err
    assert 'Traceback' not in err


def test_failed_conversion_leaves_previous_output(capsys, tmp_path):
    out = tmp_path / 'out'
    good = tmp_path / 'good.yaml'
    good.write_text('a: role:x\n')
    assert (
        cli.main(['convert', '--policy-file', str(good), '-o', str(out)]) == 0
    )
    before = sorted(p.name for p in out.rglob('*'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: role:x\nr: http://x\n')
    code, _, err = run(
        capsys, 'convert', '--policy-file', str(bad), '-o', str(out)
    )
    assert code == 2
    assert "rule 'r'" in err
    assert sorted(p.name for p in out.rglob('*')) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.out.')]


def test_refuses_to_replace_a_foreign_directory(capsys, tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('x')
    good = tmp_path / 'good.yaml'
    good.write_text('a: role:x\n')
    code, _, err = run(
        capsys,
        'convert',
        '--policy-file',
        str(good),
        '-o',
        str(tmp_path / 'mine'),
    )
    assert code == 2
    assert 'refusing' in err
    assert (tmp_path / 'mine' / 'keep.txt').read_text() == 'x'


def test_strict_turns_warnings_into_exit_1(capsys, tmp_path):
    f = tmp_path / 'p.yaml'
    f.write_text('a: rule:b\nb: rule:a\n')
    code, _, err = run(
        capsys, 'convert', '--policy-file', str(f), '-o', str(tmp_path / 'o')
    )
    assert code == 0
    assert 'warning' in err and 'cycle' in err
    code, _, err = run(
        capsys,
        'convert',
        '--strict',
        '--policy-file',
        str(f),
        '-o',
        str(tmp_path / 'o2'),
    )
    assert code == 1
    assert 'cycle' in err
    assert not (tmp_path / 'o2').exists()


def test_namespace_and_package_prefix(capsys, tmp_path, corpus_entry_points):
    code, _, err = run(
        capsys,
        'convert',
        '--namespace',
        'ironic.api',
        '--package-prefix',
        'openstack.ironic',
        '--no-enforce-new-defaults',
        '-o',
        str(tmp_path / 'o'),
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / 'o' / 'manifest.json').read_text())
    assert len(manifest['rules']) == 133
    entry = next(iter(manifest['rules'].values()))
    assert entry['query'].startswith('data.openstack.ironic.')
    assert any(e['scope_types'] for e in manifest['rules'].values())


def test_console_script_runs_as_a_module(tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'oslo_opa.cli', 'convert', '--nope'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith('oslo-opa convert: error:')
    assert len(proc.stderr.splitlines()) == 1
