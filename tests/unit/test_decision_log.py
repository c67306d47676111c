"""Decision logs: events in OPA's format, secrets erased, file and
decision-log service sinks that never hold a decision up."""

from __future__ import annotations

import copy
import gzip
import http.server
import json
import logging
import os
import socket
import threading

import pytest
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy as oslo_policy

from oslo_opa import check, decider, manifest, opts
from oslo_opa.logs import DecisionLog, Mask, ServiceSink, from_conf
from tests import policies

SECRET = 'gAAAAA-secret-token-7f3a'
PASSWORD = 'correct horse battery staple'


@pytest.fixture(autouse=True)
def _fresh_deciders():
    yield
    check.reset()


@pytest.fixture
def converted(tmp_path):
    return policies.converted(str(tmp_path), policies.THINGS)


def delegated(directory, **options):
    conf = cfg.ConfigOpts()
    conf(args=[], project='things', default_config_files=[])
    enf = oslo_policy.Enforcer(
        conf, policy_file=os.path.join(directory, 'policy.yaml')
    )
    opts.register_opts(conf)
    conf.set_override('rego_path', directory, 'oslo_opa')
    for name, value in options.items():
        conf.set_override(name, value, 'oslo_opa')
    return enf


def events_in(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def flush(enf):
    log = check.decider_for(enf.conf).log
    assert log.flush(10)


def test_every_decision_is_an_opa_event(converted, tmp_path):
    path = str(tmp_path / 'decisions.log')
    enf = delegated(converted, decision_log_file=path)
    creds = {'roles': ['member'], 'project_id': 'p1', 'user_id': 'u1'}
    assert enf.enforce('get_thing', {'project_id': 'p1'}, creds)
    assert not enf.enforce('delete_thing', {'project_id': 'p1'}, creds)
    assert enf.enforce('get_thing', {'project_id': 'p1'}, creds)  # cached
    flush(enf)
    events = events_in(path)
    assert [e['result'] for e in events] == [True, False, True]
    first = events[0]
    revision = manifest.load(converted).revision
    assert revision.startswith('p-')
    assert first['bundles'] == {'oslo_opa': {'revision': revision}}
    assert first['path'] == 'p/get_thing/allow'
    assert first['input']['credentials']['project_id'] == 'p1'
    assert first['labels']['service'] == 'things'
    assert set(first['labels']) == {'id', 'version', 'service'}
    assert first['timestamp'].endswith('Z') and 'T' in first['timestamp']
    assert first['metrics']['timer_rego_query_eval_ns'] > 0
    assert first['oslo_opa']['rule'] == 'get_thing'
    assert first['oslo_opa']['driver'] == 'embedded'
    assert first['oslo_opa']['mode'] == 'enforce'
    assert first['oslo_opa']['route'] in ('fast', 'full')
    assert events[2]['oslo_opa']['route'] == 'cache'
    assert events[2]['oslo_opa']['cached'] is True
    assert len({e['decision_id'] for e in events}) == 3


def test_a_failed_decision_says_how_it_was_decided(converted, tmp_path):
    path = str(tmp_path / 'decisions.log')
    enf = delegated(converted, decision_log_file=path, failure_mode='fallback')
    d = check.decider_for(enf.conf)
    assert d.decide('no_such_rule', {}, {'roles': ['admin']}) is False
    d.log.flush(10)
    (event,) = events_in(path)
    assert event['oslo_opa']['fallback'] == 'deny'
    assert 'no_such_rule' in event['oslo_opa']['error']
    assert event['oslo_opa']['route'] == 'error'


def test_the_file_is_rotated_by_size(converted, tmp_path):
    path = str(tmp_path / 'decisions.log')
    enf = delegated(
        converted,
        decision_log_file=path,
        decision_log_max_bytes=2048,
        decision_log_backups=2,
        cache_size=0,
    )
    for n in range(60):
        enf.enforce('get_thing', {'project_id': f'p{n}'}, {'roles': []})
    flush(enf)
    names = sorted(os.listdir(tmp_path))
    assert 'decisions.log.1' in names and 'decisions.log.2' in names
    assert 'decisions.log.3' not in names
    kept = sum(
        len(events_in(str(tmp_path / n)))
        for n in names
        if n.startswith('decisions.log')
    )
    assert 0 < kept < 60
    assert os.stat(path + '.1').st_mode & 0o077 == 0


def test_no_secret_of_a_request_context_is_written(
    converted, tmp_path, caplog
):
    path = str(tmp_path / 'decisions.log')
    enf = delegated(
        converted,
        decision_log_file=path,
        decision_log_mask=['/input/credentials/user'],
        failure_mode='fallback',
    )
    ctx = oslo_context.RequestContext(
        auth_token=SECRET,
        user_id='alice',
        project_id='p1',
        roles=['member'],
    )
    creds = {**ctx.to_dict(), 'password': PASSWORD}
    with caplog.at_level(logging.DEBUG):
        # The context itself (oslo.policy asks it for its policy
        # values), and its whole dict, token included.
        assert enf.enforce('get_thing', {'project_id': 'p1'}, ctx)
        assert enf.enforce('get_thing', {'project_id': 'p1'}, creds)
        d = check.decider_for(enf.conf)
        # A failure logs the whole input, every credential.
        assert d.decide('missing', {'project_id': 'p1'}, creds) is False
        d.log.flush(10)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    assert SECRET not in text and PASSWORD not in text
    assert SECRET not in caplog.text and PASSWORD not in caplog.text
    failed = events_in(path)[-1]
    assert '/input/credentials/auth_token' in failed['erased']
    assert '/input/credentials/password' in failed['erased']
    assert '/input/credentials/user' in failed['erased']
    assert 'user' not in failed['input']['credentials']
    # What is not secret stays.
    assert failed['input']['credentials']['project_id'] == 'p1'


@pytest.mark.parametrize(
    'event, pointers, expected',
    [
        (
            {'input': {'a': {'Token': 1, 'b': 2}}},
            [],
            {'input': {'a': {'b': 2}}, 'erased': ['/input/a/Token']},
        ),
        (
            {'input': {'l': [{'x_secret': 1}, {'y': 2}]}},
            [],
            {
                'input': {'l': [{}, {'y': 2}]},
                'erased': ['/input/l/0/x_secret'],
            },
        ),
        (
            {'input': {'a': {'b': 1, 'c': 2}}},
            ['/input/a/b'],
            {'input': {'a': {'c': 2}}, 'erased': ['/input/a/b']},
        ),
        (
            {'input': {'a/b': 1, 'c': 2}},
            ['/input/a~1b'],
            {'input': {'c': 2}, 'erased': ['/input/a~1b']},
        ),
        ({'input': {'a': 1}}, ['/input/zz'], {'input': {'a': 1}}),
    ],
)
def test_masking(event, pointers, expected):
    before = copy.deepcopy(event)
    assert Mask(pointers).apply(event) == expected
    # The caller's input is never changed.
    assert event == before


def test_a_bad_mask_turns_logging_off_with_a_clear_error(tmp_path, caplog):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    opts.register_opts(conf)
    conf.set_override('decision_log_file', str(tmp_path / 'x'), 'oslo_opa')
    conf.set_override('decision_log_mask', ['input/x'], 'oslo_opa')
    with caplog.at_level(logging.ERROR):
        assert from_conf(conf.oslo_opa, 'svc') is None
    assert 'decision_log_mask' in caplog.text and "'input/x'" in caplog.text


# --- the decision-log service ------------------------------------------------


class Collector(http.server.ThreadingHTTPServer):
    """A decision-log service: stores what it is sent; status says how
    it answers, hang makes it never answer."""

    def __init__(self):
        self.batches = []
        self.status = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        super().__init__(('127.0.0.1', 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f'http://127.0.0.1:{self.server_address[1]}'

    def events(self):
        return [e for b in self.batches for e in b]

    def stop(self):
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        if self.server.hang.is_set():
            self.server.release.wait(30)
            return
        if self.server.status == 200:
            assert self.path == '/logs'
            assert self.headers['Content-Encoding'] == 'gzip'
            self.server.batches.append(json.loads(gzip.decompress(body)))
        self.send_response(self.server.status)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.stop()


def service_log(url, buffer=100, **kw):
    sink = ServiceSink(
        url,
        buffer=buffer,
        batch_size=10,
        flush_interval=0.05,
        timeout=(0.5, 0.5),
        min_delay=0.05,
        max_delay=0.2,
        **kw,
    )
    return DecisionLog([sink], Mask(), 'svc', buffer=buffer), sink


def decide_many_times(directory, log, n=50):
    d = decider.load(directory, log=log, cache_size=0)
    for i in range(n):
        d.decide('get_thing', {'project_id': f'p{i}'}, {'roles': ['admin']})
    return d


def wait_for(predicate, timeout=10.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()


def test_events_reach_the_service_in_gzipped_batches(converted, collector):
    log, sink = service_log(collector.url)
    decide_many_times(converted, log, 25)
    assert wait_for(lambda: len(collector.events()) == 25)
    assert all(len(b) <= 10 for b in collector.batches)
    assert {e['path'] for e in collector.events()} == {'p/get_thing/allow'}
    log.close()


def test_a_failing_service_gets_the_events_when_it_recovers(
    converted, collector
):
    collector.status = 500
    log, sink = service_log(collector.url)
    decide_many_times(converted, log, 20)
    assert wait_for(lambda: sink.sent == 0 and len(sink._pending) == 20)
    collector.status = 200
    assert wait_for(lambda: len(collector.events()) == 20)
    assert sink.dropped == 0
    log.close()


def _refusing_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}'


@pytest.mark.parametrize('how', ['refused', 'hung'])
def test_a_collector_that_is_down_never_holds_a_decision(
    converted, collector, how
):
    url = _refusing_url() if how == 'refused' else collector.url
    if how == 'hung':
        collector.hang.set()
    log, sink = service_log(url, buffer=5)
    finished = threading.Event()

    def work():
        decide_many_times(converted, log, 200)
        finished.set()

    threading.Thread(target=work, daemon=True).start()
    # Generous: 200 embedded decisions take well under a second; a
    # decision waiting on the collector would wait forever here.
    assert finished.wait(60)
    assert wait_for(lambda: sink.dropped + log.dropped > 0)
    assert sink.sent == 0
    collector.release.set()
    log.close()


def test_an_overlays_reasons_are_in_its_event(converted, tmp_path):
    overlays = tmp_path / 'overlays'
    overlays.mkdir()
    (overlays / 'freeze.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["get_thing"] contains "project frozen" if {\n'
        '\tinput.target.project_id == "frozen"\n'
        '}\n'
    )
    path = str(tmp_path / 'decisions.log')
    enf = delegated(
        converted, decision_log_file=path, overlay_path=[str(overlays)]
    )
    admin = {'roles': ['admin'], 'project_id': 'p1'}
    assert not enf.enforce('get_thing', {'project_id': 'frozen'}, admin)
    assert enf.enforce('get_thing', {'project_id': 'open'}, admin)
    flush(enf)
    denied, allowed = events_in(path)
    assert denied['oslo_opa']['route'] == 'overlay'
    assert denied['oslo_opa']['reasons']['deny'] == {
        'get_thing': ['project frozen']
    }
    assert 'reasons' not in allowed['oslo_opa']


def test_a_forked_worker_logs_its_own_decisions(converted, tmp_path):
    """API workers fork after the service loaded: the log's thread is
    started again in the child, whose events reach the file."""
    import multiprocessing

    path = str(tmp_path / 'decisions.log')
    enf = delegated(converted, decision_log_file=path, cache_size=0)
    admin = {'roles': ['admin'], 'project_id': 'p1'}
    assert enf.enforce('get_thing', {'project_id': 'parent'}, admin)
    flush(enf)

    def child():
        for n in range(3):
            enf.enforce('get_thing', {'project_id': f'child{n}'}, admin)
        os._exit(0 if check.decider_for(enf.conf).log.flush(10) else 1)

    proc = multiprocessing.get_context('fork').Process(target=child)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    targets = [e['input']['target']['project_id'] for e in events_in(path)]
    assert targets == ['parent', 'child0', 'child1', 'child2']


def test_a_denials_event_can_carry_its_failing_checks(converted, tmp_path):
    path = str(tmp_path / 'decisions.log')
    enf = delegated(
        converted, decision_log_file=path, decision_log_explain=True
    )
    member = {'roles': ['member'], 'project_id': 'p1', 'user_id': 'u1'}
    assert not enf.enforce('get_thing', {'project_id': 'p2'}, member)
    assert enf.enforce('get_thing', {'project_id': 'p1'}, member)
    flush(enf)
    denied, allowed = events_in(path)
    failing = denied['oslo_opa']['failing']
    assert {leaf['text'] for leaf in failing} == {
        'role:admin',
        'project_id:%(project_id)s',
    }
    assert all(leaf['outcome'] == 'fail' for leaf in failing)
    # The target's value is shown; credentials' are masked.
    project = next(leaf for leaf in failing if leaf['text'].startswith('p'))
    assert project['target'] == {'project_id': 'p2'}
    assert 'p1' not in json.dumps(failing)
    assert 'failing' not in allowed['oslo_opa']
