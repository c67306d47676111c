"""decide_many over http: one request for a batch, against the real OPA.

The bundle ``oslo-opa bundle`` builds carries each service's batch rules
(oslo_opa/batch.py).  decide_many sends one request per batch, the
targets of one rule for one caller as a group, and gets the same
decisions as one decide per item, overlays or not; an item that errs in
OPA gets its error and the others still decide; a bundle without the
batch rules is asked one item at a time.
"""

from __future__ import annotations

import json
import os

import pytest

from oslo_opa import bundle, decider, overlay
from oslo_opa.convert import convert
from tests import differential
from tests.corpus import policy_file
from tests.functional.test_opa_sidecar import Opa

SERVICE = 'neutron'
DECISIONS = '/v1/data/oslo_opa/batch/neutron/decisions'
RESULTS = '/v1/data/oslo_opa/batch/neutron/results'
GET_PORT = '/v1/data/oslo_opa/batch/neutron/rules/get_port'
# An overlay that reads the target: owners "p3" are denied everything,
# and "p4" are granted get_port.
TARGETED = """package oslo_opa.overlay

deny["*"] contains "frozen" if input.target.project_id == "p3"

grant["get_port"] contains "shared" if input.target.project_id == "p4"
"""
# An overlay that errs (lower() of a number, a builtin error under
# strict-builtin-errors) for one caller, and says nothing otherwise.
ERRING = """package oslo_opa.overlay

deny["*"] contains "never" if {
\tlower(input.credentials.boom) == "never this"
}
"""


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('batch') / SERVICE)
    convert(out, policy_files=[policy_file(SERVICE)], tests=False)
    return out


def _serve(opa_bin, tmp_path, directory, overlays=None, batch=True):
    path = str(tmp_path / 'b.tar.gz')
    bundle.build(directory, path, overlays=overlays)
    if not batch:
        # A bundle made by other means: without the batch rule.
        import io
        import tarfile

        with tarfile.open(path) as tar:
            kept = [
                (m, tar.extractfile(m).read())
                for m in tar.getmembers()
                if not m.name.startswith('batch/')
            ]
        with tarfile.open(path, 'w:gz') as tar:
            for member, data in kept:
                tar.addfile(member, io.BytesIO(data))
    return Opa(opa_bin, tmp_path, bundles=[path]).start()


def _decider(directory, opa, **kw):
    return decider.load(
        directory,
        driver='http',
        cache_size=0,
        opa_url=opa.url,
        opa_read_timeout=30.0,
        opa_warm_up=False,
        **kw,
    )


class _Requests:
    """Counts the driver's requests to OPA (a spy: they are still made)."""

    def __init__(self, driver):
        self.paths: list[str] = []
        real = driver.transport.request

        def request(method, path, *args, **kwargs):
            self.paths.append(path.split('?')[0])
            return real(method, path, *args, **kwargs)

        driver.transport.request = request


def _items(directory):
    from oslo_opa.convert import load_rule_table

    table = load_rule_table(policy_files=[policy_file(SERVICE)])
    out = []
    for rule in list(table.rules)[::7]:
        for creds, target in differential.rule_inputs(table, rule, 6):
            out.append((rule, creds, target))
    return out


def test_one_request_decides_as_one_per_item(opa_bin, tmp_path, converted):
    opa = _serve(opa_bin, tmp_path, converted)
    try:
        d = _decider(converted, opa)
        requests = _Requests(d.driver)
        creds = {'user_id': 'u1', 'project_id': 'p1', 'roles': ['reader']}
        targets = [
            {'project_id': f'p{i}', 'id': f'port{i}'} for i in range(300)
        ]
        many = d.decide_many([('get_port', t) for t in targets], creds)
        assert requests.paths == [GET_PORT]
        one = [d.decide('get_port', t, creds) for t in targets]
        assert many == one
        assert many[1] is True and many[0] is False
        # Many rules, many callers' inputs: the same as one by one.
        items = _items(converted)
        for creds_i in ({'roles': ['admin']}, {'roles': ['reader']}):
            requests.paths.clear()
            pairs = [(r, t) for r, _, t in items]
            many = d.decide_many(pairs, creds_i)
            assert len(requests.paths) == 1
            assert many == [d.decide(r, t, creds_i) for r, t in pairs]
        d.close()
    finally:
        opa.stop()


def test_an_item_that_errs_gets_its_error(opa_bin, tmp_path, converted):
    odir = tmp_path / 'ov'
    odir.mkdir()
    (odir / 'e.rego').write_text(ERRING)
    overlays = overlay.load([str(odir)], embedded=False)
    opa = _serve(opa_bin, tmp_path, converted, overlays=overlays)
    try:
        d = _decider(converted, opa, overlay_path=[str(odir)])
        requests = _Requests(d.driver)
        admin = {'roles': ['admin'], 'boom': 'x'}
        erring = {'roles': ['admin'], 'boom': 1}
        pairs = [('get_port', {'id': str(i)}) for i in range(3)]
        assert d.decide_many(pairs, admin) == [True, True, True]
        assert len(requests.paths) == 1
        # One caller's inputs make OPA err: asked one by one, each
        # fails closed (a deny), and a request per item follows.
        requests.paths.clear()
        driver_many = d.driver.decide_many(
            [
                ('get_port', d.driver.input_for('get_port', admin, {})),
                ('get_port', d.driver.input_for('get_port', erring, {})),
                ('not_a_rule', {}),
            ]
        )
        assert driver_many[0] is True
        assert 'HTTP 500' in str(driver_many[1])
        assert 'not in the manifest' in str(driver_many[2])
        assert len(requests.paths) == 3  # the batch, then each of two
        d.close()
    finally:
        opa.stop()


def test_without_the_batch_rule_one_request_per_item(
    opa_bin, tmp_path, converted
):
    opa = _serve(opa_bin, tmp_path, converted, batch=False)
    try:
        d = _decider(converted, opa)
        requests = _Requests(d.driver)
        creds = {'user_id': 'u1', 'project_id': 'p1', 'roles': ['reader']}
        targets = [{'project_id': f'p{i}'} for i in range(5)]
        many = d.decide_many([('get_port', t) for t in targets], creds)
        assert many == [False, True, False, False, False]
        assert requests.paths[:3] == [GET_PORT, DECISIONS, RESULTS]
        assert len(requests.paths) == 8
        # Known from then on: no more batch requests.
        requests.paths.clear()
        d.decide_many([('get_port', t) for t in targets], creds)
        assert len(requests.paths) == 5
        d.close()
    finally:
        opa.stop()


def test_the_batch_rule_is_opa_check_and_fmt_clean(
    opa_bin, tmp_path, converted
):
    from oslo_opa import batch, manifest
    from tests.functional.conftest import run_opa

    path = tmp_path / 'batch.rego'
    path.write_text(batch.module('neutron', manifest.load(converted)))
    proc = run_opa(opa_bin, 'check', '--strict', converted, str(path))
    assert proc.returncode == 0, proc.stderr
    proc = run_opa(opa_bin, 'fmt', '--list', str(path))
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout
    assert os.path.basename(batch.file_name('neutron')) == 'neutron.rego'
    json.loads(batch.body([('a', {})]))


@pytest.mark.parametrize('with_overlay', [False, True])
def test_groups_decide_as_one_per_item(
    opa_bin, tmp_path, converted, with_overlay
):
    """Every rule of the service over odd and ordinary targets, for
    callers the fast path takes and for others, in one request: each
    decision is the one OPA gives a single query, with and without an
    overlay that reads the target."""
    from oslo_opa.convert import load_rule_table

    overlays = None
    kw = {}
    if with_overlay:
        odir = tmp_path / 'ov'
        odir.mkdir()
        (odir / 't.rego').write_text(TARGETED)
        overlays = overlay.load([str(odir)], embedded=False)
        kw = {'overlay_path': [str(odir)]}
    opa = _serve(opa_bin, tmp_path, converted, overlays=overlays)
    try:
        d = _decider(converted, opa, **kw)
        requests = _Requests(d.driver)
        table = load_rule_table(policy_files=[policy_file(SERVICE)])
        rules = list(table.rules)[::5] + ['get_port', 'update_port']
        targets = [{'project_id': f'p{i % 6}', 'id': str(i)} for i in range(8)]
        targets += [
            {'project_id': ['p1'], 'network:project_id': 'p1'},
            {'project_id': 1.5, 'tenant_id': None},
            {'project_id': 'p1', 'network:shared': True, 'x': {'a': 1}},
        ]
        callers = [
            {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'},
            {'roles': ['admin', 'member'], 'project_id': 'p2'},
            {'roles': 'reader', 'project_id': 'p1', 'service_roles': ['a']},
            # str() of the list target: oslo.policy's match, which the
            # fast path would miss (the batch rule sends it to allow).
            {'roles': ['reader'], 'project_id': "['p1']"},
        ]
        mismatches = []
        for creds in callers:
            pairs = [(r, t) for r in rules for t in targets]
            requests.paths.clear()
            many = d.decide_many(pairs, creds)
            assert requests.paths == [DECISIONS]
            for (rule, target), got in zip(pairs, many, strict=True):
                if got is not d.decide(rule, target, creds):
                    mismatches.append((rule, creds, target, got))
        assert not mismatches, mismatches[:10]
        d.close()
    finally:
        opa.stop()


def test_groups_send_odd_targets_to_allow(opa_bin, tmp_path):
    """A target value the fast path cannot compare (a list, a dict, a
    number that is not whole) is decided by the rule's allow: under
    "not", the fast path's false would turn into an allow oslo.policy
    does not give."""
    from tests.differential import enforcer_for, oslo_decision

    src = tmp_path / 'policy.yaml'
    src.write_text(
        '"neg": "not project_id:%(p)s"\n'
        '"role": "not role:%(r)s and role:reader"\n'
    )
    out = str(tmp_path / 'out')
    convert(out, policy_files=[str(src)], tests=False)
    from oslo_opa.convert import load_rule_table

    enforcer = enforcer_for(load_rule_table(policy_files=[str(src)]))
    opa = _serve(opa_bin, tmp_path, out)
    try:
        d = _decider(out, opa)
        requests = _Requests(d.driver)
        creds = {'roles': ['reader'], 'project_id': "['p1']"}
        targets = [
            {'p': 'p1', 'r': 'x'},
            {'p': "['p1']", 'r': 'reader'},
            {'p': ['p1'], 'r': 'x'},
            {'p': {'a': 1}, 'r': ['reader']},
            {'p': 'p2', 'r': {'reader': 1}},
            {'p': 2.5, 'r': 'x'},
        ]
        for rule in ('neg', 'role'):
            requests.paths.clear()
            many = d.decide_many([(rule, t) for t in targets], creds)
            assert len(requests.paths) == 1
            assert requests.paths[0].endswith(f'/rules/{rule}')
            one = [d.decide(rule, t, creds) for t in targets]
            assert many == one, rule
            # Each the Rego's answer; where oslo.policy compares the
            # str() of a container, the Rego denies (fails closed).
            native = [oslo_decision(enforcer, rule, creds, t) for t in targets]
            allowed = zip(many, native, strict=True)
            assert [m for m, n in allowed if m and not n] == []
        d.close()
    finally:
        opa.stop()
