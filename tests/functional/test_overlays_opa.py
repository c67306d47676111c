"""Overlays in the real OPA: it decides as oslo.policy and the embedded
driver do, through opa eval, a bundle server-less sidecar and a push.

* the overlay differential of tests/unit/test_overlay_differential, in
  OPA (``opa eval`` over the converted directory and the overlay);
* a hand edit of a rule others read, decided by OPA on fast-path and
  three-valued inputs, against oslo.policy with the same edit;
* the example under examples/keystone-overlays: its own tests pass
  under ``opa test``, and so do keystone's generated tests loaded with
  it (they pin the converted rules, overlays switched off);
* ``opa run --server`` with a bundle built with ``--overlay``: the http
  driver with ``overlay_path`` decides as the embedded driver does, and
  ``oslo-opa verify --opa-url`` groups the changes by overlay reason;
* ``oslo-opa push --overlay``, then a push without: OPA applies the
  overlay, then no longer does.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from oslo_opa import bundle, cli, decider, inputs
from oslo_opa.convert import convert, load_rule_table
from tests import overlays
from tests.corpus import SERVICES, policy_file
from tests.differential import enforcer_for, oslo_decision
from tests.functional.conftest import run_opa
from tests.functional.test_opa_conformance import opa_decide
from tests.functional.test_opa_sidecar import Opa

REPO = os.path.join(os.path.dirname(__file__), '..', '..')
EXAMPLE = os.path.join(REPO, 'examples', 'keystone-overlays')
OVERLAY = os.path.join(EXAMPLE, 'overlay')
DATA = os.path.join(EXAMPLE, 'data')
INPUTS_PER_RULE = 10


def _converted(root, service, tests=False):
    out = os.path.join(str(root), service)
    convert(out, policy_files=[policy_file(service)], tests=tests)
    with open(os.path.join(out, 'manifest.json')) as f:
        return out, json.load(f)


def _slug(manifest, rule):
    return manifest['rules'][rule]['package'].rpartition('.')[2]


@pytest.mark.parametrize('service', SERVICES)
def test_opa_decides_overlays_as_the_rewritten_policy(
    opa_bin, tmp_path, service
):
    table = load_rule_table(policy_files=[policy_file(service)])
    directory, manifest = _converted(tmp_path, service)
    grants, denies = overlays.chosen(table)
    odir = tmp_path / 'overlay'
    odir.mkdir()
    (odir / 'overlay.rego').write_text(overlays.overlay_rego(grants, denies))
    expected = enforcer_for(overlays.customized(table, grants, denies))
    cases = [
        (rule, creds, target)
        for rule in table.rules
        for creds, target in overlays.inputs_for(table, rule, INPUTS_PER_RULE)
    ]
    want = [oslo_decision(expected, r, c, t) for r, c, t in cases]
    docs = [
        (_slug(manifest, r), inputs.build_input(c, t, r)) for r, c, t in cases
    ]
    got = opa_decide(
        opa_bin,
        directory,
        manifest['package_prefix'],
        docs,
        str(tmp_path / 'eval'),
        extra=(str(odir),),
    )
    wrong = [
        (case, w, g)
        for case, w, g in zip(cases, want, got, strict=True)
        if w != g
    ]
    assert not wrong, wrong[:10]
    plain = enforcer_for(table)
    changed = sum(
        oslo_decision(plain, r, c, t) != w
        for (r, c, t), w in zip(cases, want, strict=True)
    )
    assert changed > 0 and 0 < sum(got) < len(got)


def test_opa_reads_a_hand_edited_rule_as_it_decides(opa_bin, tmp_path):
    """keystone's admin_required edited to refuse a suspended admin: every
    rule reading it follows, in OPA, on every path."""
    table = load_rule_table(policy_files=[policy_file('keystone')])
    directory, manifest = _converted(tmp_path, 'keystone')
    overlays.edit_admin_required(directory)
    expected = enforcer_for(overlays.edited_table(table))
    readers = [
        r
        for r, e in manifest['rules'].items()
        if 'admin_required' in e['deps']
    ]
    cases = []
    for rule in readers:
        for n, (creds, target) in enumerate(
            overlays.inputs_for(table, rule, 3)
        ):
            # With roles a list: OPA's `not "x" in <undefined>` is false,
            # regopy's true (the edit, not the converter, reads roles).
            if not isinstance(creds.get('roles'), list):
                continue
            if n % 2:
                creds = {**creds, 'roles': [*creds['roles'], 'suspended']}
            cases.append((rule, creds, target))
    want = [oslo_decision(expected, r, c, t) for r, c, t in cases]
    docs = [
        (_slug(manifest, r), inputs.build_input(c, t, r)) for r, c, t in cases
    ]
    got = opa_decide(
        opa_bin, directory, 'keystone', docs, str(tmp_path / 'eval')
    )
    wrong = [
        (case, w, g)
        for case, w, g in zip(cases, want, got, strict=True)
        if w != g
    ]
    assert len(cases) > 300
    assert not wrong, wrong[:10]


def test_the_example_passes_opa_test(opa_bin):
    proc = run_opa(opa_bin, 'test', '--format', 'json', OVERLAY, DATA)
    results = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(results) == 11 and not any(
        r.get('fail') or r.get('error') for r in results
    )
    proc = run_opa(opa_bin, 'check', '--strict', OVERLAY)
    assert proc.returncode == 0, proc.stderr
    proc = run_opa(opa_bin, 'fmt', '--list', OVERLAY)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout


def test_generated_tests_pass_with_the_overlays_loaded(opa_bin, tmp_path):
    """The generated tests pin the converted rules: with overlays loaded
    beside them (which change those rules' decisions) they still pass,
    under opa test and oslo-opa test."""
    directory, _ = _converted(tmp_path, 'keystone', tests=True)
    proc = run_opa(
        opa_bin, 'test', '--format', 'json', directory, OVERLAY, DATA
    )
    results = json.loads(proc.stdout)
    failed = [r['name'] for r in results if r.get('fail') or r.get('error')]
    assert proc.returncode == 0 and not failed, failed[:10]
    assert len(results) > 1500
    # And the overlays do change those rules: a generated test without
    # its "with data.oslo_opa.overlay as {}" fails with them.
    module = os.path.join(
        directory, 'keystone', 'identity_get_project_test.rego'
    )
    with open(module) as f:
        text = f.read()
    with open(module, 'w') as f:
        f.write(
            text.replace(' with data.oslo_opa.overlay as {}', '').replace(
                '"roles": ["admin"]', '"roles": ["admin", "suspended"]'
            )
        )
    proc = run_opa(opa_bin, 'test', directory, OVERLAY, DATA)
    assert proc.returncode != 0
    assert cli.main(['test', directory, OVERLAY, DATA]) == 2


@pytest.fixture
def example_opa(opa_bin, tmp_path):
    directory, _ = _converted(tmp_path, 'keystone')
    path = str(tmp_path / 'keystone.tar.gz')
    from oslo_opa import overlay

    bundle.build(
        directory,
        path,
        data_paths=[DATA],
        overlays=overlay.load([OVERLAY], embedded=False),
    )
    opa = Opa(opa_bin, tmp_path, bundles=[path])
    opa.start()
    yield opa, directory
    opa.stop()


def test_the_sidecar_decides_as_the_embedded_driver(example_opa):
    opa, directory = example_opa
    table = load_rule_table(policy_files=[policy_file('keystone')])
    http = decider.load(
        directory,
        driver='http',
        overlay_path=[OVERLAY],
        cache_size=0,
        opa_url=opa.url,
        opa_read_timeout=5.0,
        opa_warm_up=False,
    )
    embedded = decider.load(
        directory, overlay_path=[OVERLAY], data_path=[DATA], cache_size=0
    )
    with open(os.path.join(EXAMPLE, 'requests.json')) as f:
        requests = [(r['rule'], r['creds'], r['target']) for r in json.load(f)]
    for rule in list(table.rules)[::4]:
        requests += [
            (rule, c, t) for c, t in overlays.inputs_for(table, rule, 2)
        ]
    differ = [
        (r, c, t)
        for r, c, t in requests
        if http.decide(r, t, c) != embedded.decide(r, t, c)
    ]
    example = [http.decide(r, t, c) for r, c, t in requests[:7]]
    http.close()
    embedded.close()
    assert example == [True, False, True, False, True, True, False]
    assert not differ, differ[:10]


def test_verify_against_the_sidecar_groups_by_reason(example_opa, capsys):
    opa, directory = example_opa
    rc = cli.main(
        [
            'verify',
            directory,
            '--policy-file',
            policy_file('keystone'),
            '--opa-url',
            opa.url,
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
    keys = {(c['kind'], c['key']) for c in report['changes']}
    assert keys == {
        ('deny', '*'),
        ('deny', 'identity:delete_project'),
        ('grant', 'identity:get_project'),
        ('grant', 'identity:update_project'),
    }


def test_push_with_and_without_the_overlays(opa_bin, tmp_path, capsys):
    directory, _ = _converted(tmp_path, 'glance')
    odir = tmp_path / 'ov'
    odir.mkdir()
    (odir / 'suspend.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["*"] contains "suspended" if "suspended" in '
        'input.credentials.roles\n'
    )
    opa = Opa(opa_bin, tmp_path).start()
    try:
        args = ['push', directory, *opa.cli_args()]
        assert cli.main([*args, '--overlay', str(odir)]) == 0
        d = decider.load(
            directory,
            driver='http',
            overlay_path=[str(odir)],
            cache_size=0,
            opa_url=opa.url,
            opa_read_timeout=30.0,
            opa_warm_up=False,
        )
        admin = {'roles': ['admin']}
        suspended = {'roles': ['admin', 'suspended']}
        assert d.decide('get_images', {}, admin) is True
        assert d.decide('get_images', {}, suspended) is False
        d.close()
        assert cli.main(args) == 0
        d = decider.load(
            directory,
            driver='http',
            cache_size=0,
            opa_url=opa.url,
            opa_read_timeout=30.0,
            opa_warm_up=False,
        )
        assert d.decide('get_images', {}, suspended) is True
        d.close()
    finally:
        opa.stop()
    shutil.rmtree(directory)


def test_overlays_nobody_named_get_the_whole_input(example_opa, caplog):
    """OPA holds overlays the service was not told about (no
    overlay_path): after the warm-up looks, every rule is sent the whole
    input, so a rule that reads no roles still sees the suspension."""
    opa, directory = example_opa
    d = decider.load(
        directory,
        driver='http',
        cache_size=0,
        opa_url=opa.url,
        opa_read_timeout=5.0,
    )
    assert d.driver.wait_warm_up(120)
    suspended = {'user_id': 'u1', 'roles': ['reader', 'suspended']}
    rule = 'identity:get_auth_catalog'  # '': reads nothing
    with caplog.at_level('WARNING', logger='oslo_opa'):
        assert d.decide(rule, {}, suspended) is False
    assert 'holds overlays' in caplog.text
    assert d.decide(rule, {}, {'user_id': 'u1', 'roles': ['reader']}) is True
    d.close()
