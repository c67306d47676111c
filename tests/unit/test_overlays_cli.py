"""The overlays from the command line: decide, verify, convert, test,
bundle and push name them, and the example under examples/ works."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import pytest

from oslo_opa import cli
from oslo_opa.convert import convert
from tests import overlays
from tests.corpus import policy_file

REPO = os.path.join(os.path.dirname(__file__), '..', '..')
EXAMPLE = os.path.join(REPO, 'examples', 'keystone-overlays')
OVERLAY = os.path.join(EXAMPLE, 'overlay')
DATA = os.path.join(EXAMPLE, 'data')
KEYSTONE = policy_file('keystone')


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('ks') / 'out')
    convert(out, policy_files=[KEYSTONE], tests=False)
    return out


def test_decide_names_the_overlay_reason(keystone, capsys):
    rc = cli.main(
        [
            'decide',
            keystone,
            '--requests',
            os.path.join(EXAMPLE, 'requests.json'),
            '--overlay',
            OVERLAY,
            '--data',
            DATA,
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        'ALLOW  identity:get_project: the check string passes',
        'DENY   identity:get_project: an overlay denies it: suspended '
        'users can do nothing (deny["*"]: every rule)',
        'ALLOW  identity:get_project: an overlay grants it: member of the '
        'auditors group',
        'DENY   identity:delete_project: an overlay denies it: protected '
        'project',
        'ALLOW  identity:delete_project: the check string passes',
        'ALLOW  identity:update_project: an overlay grants it: manager of '
        'an ancestor project',
        'DENY   identity:list_projects: an overlay denies it: suspended '
        'users can do nothing (deny["*"]: every rule)',
    ]


def test_decide_names_an_overlay_on_a_rule_read(keystone, capsys, tmp_path):
    odir = tmp_path / 'ov'
    odir.mkdir()
    (odir / 'g.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'grant["admin_required"] contains "break glass" if '
        'input.credentials.user_id == "bg"\n'
    )
    rc = cli.main(
        [
            'decide',
            keystone,
            '--rule',
            'identity:get_project',
            '--creds',
            '{"user_id": "bg", "roles": []}',
            '--overlay',
            str(odir),
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out == (
        'ALLOW  identity:get_project: the check string passes, overlays on '
        "the rules it reads: grant['admin_required']: break glass\n"
    )


def test_verify_groups_the_changes_by_overlay_reason(keystone, capsys):
    rc = cli.main(
        [
            'verify',
            keystone,
            '--policy-file',
            KEYSTONE,
            '--overlay',
            OVERLAY,
            '--data',
            DATA,
            '--inputs',
            '10',
            '--format',
            'json',
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == 0, report['differences'][:3]
    assert report['differences'] == []
    by_reason = {
        (c['kind'], c['key'], c['reason']): c for c in report['changes']
    }
    assert set(by_reason) == {
        ('deny', '*', 'suspended users can do nothing'),
        ('deny', 'identity:delete_project', 'protected project'),
        ('grant', 'identity:get_project', 'member of the auditors group'),
        ('grant', 'identity:update_project', 'manager of an ancestor project'),
    }
    suspended = by_reason[('deny', '*', 'suspended users can do nothing')]
    assert len(suspended['rules']) > 50
    example = suspended['example']
    assert example['oslo_policy'] is True and example['rego'] is False
    assert 'suspended' in [r.lower() for r in example['creds']['roles']]
    protected = by_reason[
        ('deny', 'identity:delete_project', 'protected project')
    ]
    assert protected['rules'] == ['identity:delete_project']
    assert protected['example']['target'] == {'target.project.id': 'p-root'}


def test_verify_still_reports_what_no_overlay_accounts_for(
    keystone, capsys, tmp_path
):
    out = str(tmp_path / 'edited')
    shutil.copytree(keystone, out)
    module = os.path.join(out, 'keystone', 'identity_get_region.rego')
    with open(module) as f:
        text = f.read()
    with open(module, 'w') as f:
        f.write(text.replace('default allow := false', 'allow := false'))
    rc = cli.main(
        [
            'verify',
            out,
            '--policy-file',
            KEYSTONE,
            '--overlay',
            OVERLAY,
            '--data',
            DATA,
            '--inputs',
            '10',
        ]
    )
    text = capsys.readouterr().out
    assert rc == 1
    assert 'DIFFERS  identity:get_region:' in text
    assert 'CHANGED  deny["*"] "suspended users can do nothing"' in text


def test_convert_checks_the_overlays_against_the_new_rules(tmp_path, capsys):
    odir = tmp_path / 'ov'
    odir.mkdir()
    (odir / 'x.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["identity:renamed"] contains "x" if true\n'
    )
    out = str(tmp_path / 'out')
    args = ['convert', '--policy-file', KEYSTONE, '-o', out, '--no-tests']
    assert cli.main([*args, '--overlay', str(odir)]) == 0
    err = capsys.readouterr().err
    assert f"{odir / 'x.rego'}:3: deny['identity:renamed']" in err
    assert cli.main([*args, '--overlay', str(odir), '--strict']) == 1
    assert 'oslo-opa: error:' in capsys.readouterr().err
    assert os.listdir(odir) == ['x.rego']


def test_test_runs_the_operators_overlay_tests(capsys):
    rc = cli.main(['test', OVERLAY, DATA])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'PASS: 11/11' in out


def test_test_refuses_a_bad_overlay(tmp_path, capsys):
    (tmp_path / 'bad.rego').write_text(
        'package oslo_opa.overlay\n\nallow := true\n'
    )
    assert cli.main(['test', '--overlay', str(tmp_path)]) == 1
    assert f'{tmp_path / "bad.rego"}:3: defines allow' in (
        capsys.readouterr().err
    )


def test_bundle_carries_the_overlays_under_their_root(keystone, tmp_path):
    plain = str(tmp_path / 'plain.tar.gz')
    with_overlays = str(tmp_path / 'overlays.tar.gz')
    assert cli.main(['bundle', keystone, '-o', plain]) == 0
    assert (
        cli.main(
            ['bundle', keystone, '-o', with_overlays, '--overlay', OVERLAY]
        )
        == 0
    )

    def contents(path):
        with tarfile.open(path) as tar:
            return {
                m.name: tar.extractfile(m).read()
                for m in tar.getmembers()
                if m.isfile()
            }

    files = contents(with_overlays)
    manifest = json.loads(files['.manifest'])
    assert 'oslo_opa/overlay' in manifest['roots']
    assert (
        files['overlay/keystone.rego']
        == open(os.path.join(OVERLAY, 'keystone.rego'), 'rb').read()
    )
    # The operator's tests stay out, and the revision says overlays.
    assert not any(n.endswith('_test.rego') for n in files)
    before = json.loads(contents(plain)['.manifest'])
    assert before['revision'] != manifest['revision']
    assert 'oslo_opa/overlay' not in before['roots']


def test_bundle_refuses_a_bad_overlay(keystone, tmp_path, capsys):
    (tmp_path / 'bad.rego').write_text('package elsewhere\n\nx := 1\n')
    out = str(tmp_path / 'b.tar.gz')
    rc = cli.main(['bundle', keystone, '-o', out, '--overlay', str(tmp_path)])
    assert rc == 2
    assert 'must be in package oslo_opa.overlay' in capsys.readouterr().err
    assert not os.path.exists(out)


def test_requests_file_is_json(capsys):
    with open(os.path.join(EXAMPLE, 'requests.json')) as f:
        assert len(json.load(io.StringIO(f.read()))) == 7


def test_decide_says_when_an_edit_decides(keystone, tmp_path, capsys):
    out = str(tmp_path / 'edited')
    shutil.copytree(keystone, out)
    overlays.edit_admin_required(out)
    rc = cli.main(
        [
            'decide',
            out,
            '--rule',
            'admin_required',
            '--creds',
            '{"roles": ["admin", "suspended"]}',
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out == (
        'DENY   admin_required: its edited Rego decides so (the check '
        'string passes)\n'
    )
