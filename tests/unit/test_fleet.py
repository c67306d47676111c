"""oslo-opa status --fleet: who runs which revision, and the stragglers.
OPAs here are fakes answering its three requests; real ones are in
tests/functional/test_bundle_fleet.py."""

from __future__ import annotations

import json
import os

import pytest

from oslo_opa import cli, fleet
from oslo_opa.drivers.transport import TransportError


class FakeOpa:
    """Answers /health?bundles, /v1/data/system/bundles, /v1/status."""

    def __init__(self, url, revisions, ready=True, status=None, down=False):
        self.url = url
        self.revisions = revisions
        self.ready = ready
        self.status = status
        self.down = down
        self.closed = False

    def request(self, method, path, body=None, headers=None):
        if self.down:
            raise TransportError('cannot connect: Connection refused')
        if path == '/health?bundles':
            if self.ready is None:
                return 401, b'{"code": "unauthorized", "message": "no"}'
            return (200 if self.ready else 500), b'{}'
        if path == '/v1/data/system/bundles':
            result = {
                name: {'manifest': {'revision': rev, 'roots': ['']}}
                for name, rev in self.revisions.items()
            }
            return 200, json.dumps({'result': result}).encode()
        if path == '/v1/status':
            if self.status is None:
                return 500, json.dumps(
                    {'code': 'internal_error', 'message': 'not enabled'}
                ).encode()
            return 200, json.dumps({'result': self.status}).encode()
        raise AssertionError(path)

    def close(self):
        self.closed = True


def survey(*fakes):
    by_url = {f.url: f for f in fakes}
    instances = fleet.survey(list(by_url), by_url.__getitem__)
    assert all(f.closed for f in fakes)
    return instances, fleet.verdict(instances)


def test_all_agree():
    instances, result = survey(
        *(FakeOpa(f'http://opa{n}', {'keystone': 'r2'}) for n in range(3))
    )
    assert result.ok and result.majority == (('keystone', 'r2'),)
    assert 'fleet: all 3 agree on r2' in fleet.render(instances, result)


def test_stragglers_differ_have_none_or_cannot_be_asked():
    instances, result = survey(
        FakeOpa('http://a', {'keystone': 'r2'}),
        FakeOpa('http://b', {'keystone': 'r2'}),
        FakeOpa('http://c', {'keystone': 'r1'}),
        FakeOpa('http://d', {}, ready=False),
        FakeOpa('unix:///run/opa.sock', {}, down=True),
    )
    assert not result.ok
    assert [(i.url, why) for i, why in result.stragglers] == [
        ('http://c', 'differs from the majority'),
        ('http://d', 'no bundle activated'),
        ('unix:///run/opa.sock', 'unreachable'),
    ]
    text = fleet.render(instances, result)
    assert 'fleet: 3 of 5 straggling; the majority runs r2' in text
    assert 'Connection refused' in text
    # The table: one line per instance, in the order asked.
    lines = text.splitlines()
    assert lines[0].split() == ['INSTANCE', 'STATE', 'REVISION', 'NOTES']
    assert [line.split()[0] for line in lines[1:6]] == [
        i.url for i in instances
    ]


def test_a_health_check_refused_is_a_note_not_a_verdict():
    instances, result = survey(
        FakeOpa('http://a', {'k': 'r1'}, ready=None),
        FakeOpa('http://b', {'k': 'r1'}),
    )
    assert result.ok
    assert instances[0].ready is None
    assert instances[0].problems == ['health: HTTP 401 unauthorized: no']


def test_a_tie_has_no_majority():
    _, result = survey(
        FakeOpa('http://a', {'k': 'r1'}), FakeOpa('http://b', {'k': 'r2'})
    )
    assert result.majority is None
    assert {why for _, why in result.stragglers} == {'no majority'}


def test_every_bundle_must_agree_and_be_activated():
    both = {'lib': 'l1', 'nova': 'n2'}
    instances, result = survey(
        FakeOpa('http://a', both),
        FakeOpa('http://b', both),
        FakeOpa('http://c', both, ready=False),
        FakeOpa('http://d', {'lib': 'l1', 'nova': 'n1'}),
    )
    assert result.majority == (('lib', 'l1'), ('nova', 'n2'))
    assert [(i.url, why) for i, why in result.stragglers] == [
        ('http://c', 'a bundle is not activated'),
        ('http://d', 'differs from the majority'),
    ]
    assert 'lib=l1, nova=n2' in fleet.render(instances, result)


def test_status_plugin_errors_are_notes_not_disagreement():
    refused = {
        'bundles': {
            'keystone': {
                'active_revision': 'r2',
                'code': 'bundle_error',
                'message': 'Bundle load failed',
                'errors': [{'message': 'keystone/x.rego: digest mismatch'}],
            }
        }
    }
    instances, result = survey(
        FakeOpa('http://a', {'keystone': 'r2'}, status=refused),
        FakeOpa('http://b', {'keystone': 'r2'}),
    )
    assert result.ok
    assert instances[0].problems == [
        'bundle keystone: Bundle load failed: keystone/x.rego: digest mismatch'
    ]
    assert not instances[1].problems


def test_an_error_in_message_and_errors_is_said_once():
    """The embedded driver's status file carries its one reason in
    message and in errors (OPA's shape has both): listed once."""
    reason = 'refused: bad signature: p/x.rego: digest mismatch'
    bundles = {
        'p': {
            'active_revision': 'r2',
            'code': 'bundle_error',
            'message': reason,
            'errors': [reason],
        },
        'q': {'code': 'bundle_error', 'message': 'failed', 'errors': ['a']},
    }
    assert fleet.bundle_errors(bundles) == [
        f'bundle p: {reason}',
        'bundle q: failed: a',
    ]


def test_a_status_file_is_an_instance(tmp_path):
    """file://: what an engine without a REST API (the embedded driver)
    writes, in the shape of OPA's GET /v1/status."""
    good = tmp_path / 'nova-api.json'
    good.write_text(
        json.dumps(
            {
                'bundles': {
                    'keystone': {
                        'active_revision': 'r2',
                        'last_successful_activation': '2026-01-01T00:00Z',
                    }
                }
            }
        )
    )
    broken = tmp_path / 'broken.json'
    broken.write_text('{')
    instances = fleet.survey(
        [
            f'file://{good}',
            f'file://{broken}',
            f'file://{tmp_path}/missing.json',
        ],
        None,
    )
    assert instances[0].reachable and instances[0].revisions == {
        'keystone': 'r2'
    }
    assert instances[1].reachable and 'not JSON' in instances[1].problems[0]
    assert not instances[2].reachable


def test_write_status_file_is_what_file_urls_read(tmp_path):
    """The embedded driver's side of file://: write, then read back."""
    path = str(tmp_path / 'keystone-api.json')
    fleet.write_status_file(path, {'keystone': {'active_revision': 'r1'}})
    fleet.write_status_file(
        path,
        {
            'keystone': {
                'active_revision': 'r1',
                'code': 'bundle_error',
                'message': 'refused',
                'errors': ['bad signature'],
            }
        },
    )
    (inst,) = fleet.survey([f'file://{path}'], None)
    assert inst.revisions == {'keystone': 'r1'}
    assert inst.problems == ['bundle keystone: refused: bad signature']
    assert sorted(os.listdir(tmp_path)) == ['keystone-api.json']


def test_cli_exit_codes(tmp_path, capsys):
    def status_file(name, revision):
        path = tmp_path / name
        path.write_text(
            json.dumps({'bundles': {'k': {'active_revision': revision}}})
        )
        return f'file://{path}'

    a, b = status_file('a.json', 'r2'), status_file('b.json', 'r2')
    assert cli.main(['status', '--fleet', a, b]) == 0
    assert 'fleet: all 2 agree on r2' in capsys.readouterr().out
    c = status_file('c.json', 'r1')
    assert cli.main(['status', '--fleet', a, b, c]) == 1
    out = capsys.readouterr().out
    assert 'STRAGGLER' in out and 'c.json' in out


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--fleet', 'ftp://opa'], 'scheme must be one of'),
        (['/some/dir', '--fleet', 'http://opa'], 'give no directory'),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    assert cli.main(['status', *argv]) == 2
    assert message in capsys.readouterr().err


def test_tls_files_go_to_https_members_only(capsys):
    """An http:// member with --ca-file is asked (here: refused, so a
    straggler), not a usage error about TLS files on a plain URL."""
    code = cli.main(
        ['status', '--fleet', 'http://127.0.0.1:1', '--ca-file', '/x.pem']
    )
    out = capsys.readouterr().out
    assert code == 1 and 'unreachable' in out
