"""One policy for a fleet: nginx serving signed bundles, three real
``opa run --server -c <oslo-opa opa-config>`` and two processes running
the embedded driver (``embedded_worker.py``: ``bundle_url`` and
``bundle_verification_key``), all five polling the same bundle URL.

One test walks the whole life of a policy, each step proving one thing
for all five:

1. revision 1 published: every instance activates it and decides by it;
2. revision 2 (one rule changed) published while a checker asks every
   instance continuously: all switch within the polling window, and
   none ever answers by revision 1 after it answered by revision 2
   (each answer carries the revision that decided it, OPA's provenance
   or the embedded driver's revision in force before and after the
   decision, and its decision must be that revision's);
3. a tampered bundle (a module changed after signing) published: every
   instance refuses it, keeps revision 2, and says why (an OPA's log
   and status, which also reaches a status collector; an embedded
   driver's ``bundle_status()`` and status file);
4. nginx stopped: every instance keeps deciding by revision 2;
5. an OPA and an embedded process restarted while nginx is still down:
   both decide by revision 2 again, from their persisted copies;
6. ``oslo-opa status --fleet`` over the three OPAs' URLs and the two
   embedded status files (``file://``) agrees after step 2, and names
   the one OPA configured with a stale bundle as a straggler.

Measured and printed: publish to all five activated, and the requests
per minute the five make to nginx.  Bundles are signed by ``oslo-opa
bundle --signing-key``, with the key id and scope ``opa-config`` is given.

Another test proves the secrets stay out of the configuration file: an
HS256 secret and a bearer token reach OPA from its environment or a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from oslo_opa import cli
from oslo_opa import manifest as manifest_mod
from oslo_opa.drivers.transport import Transport
from tests import corpus
from tests.functional import test_opa_sidecar as sidecar
from tests.functional.fleet_helpers import (
    RESOURCE,
    RULE,
    SERVICE,
    Checker,
    Collector,
    Embedded,
    Publisher,
    WorkerChecker,
    active_revisions,
    ask,
    authz_dir,
    converted,
    fleet_status,
    revisions,
    signed_bundle,
    tamper,
    wait_for,
)
from tests.functional.test_opa_sidecar import Opa

# Revision 2 lets a reader list resource providers; revision 1 does not.
CHANGED = 'role:reader'
MIN_DELAY, MAX_DELAY = 1, 2
SCOPE = 'write'
KEY_ID = 'cloud-2026'
STALE = f'{SERVICE}-old.tar.gz'


@pytest.fixture
def policies(tmp_path):
    """Revision 1, 2 (RULE changed) and a tampered 2, signed; the key."""
    original = open(corpus.policy_file(SERVICE)).read()
    assert f'{RULE}: ' in original
    changed = original.replace(
        f'{RULE}: rule:admin_or_service_api', f'{RULE}: {CHANGED}'
    )
    assert changed != original
    out = {}
    key = str(tmp_path / 'signing.pem')
    pub = str(tmp_path / 'verify.pem')
    subprocess.run(
        ['openssl', 'genrsa', '-out', key, '2048'],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ['openssl', 'rsa', '-in', key, '-pubout', '-out', pub],
        check=True,
        capture_output=True,
    )
    for n, text in ((1, original), (2, changed)):
        root = tmp_path / f'rev{n}'
        root.mkdir()
        directory = converted(root, text)
        signed = str(root / 'signed.tar.gz')
        revision = signed_bundle(
            directory,
            signed,
            *('--signing-key', key, '--key-id', KEY_ID, '--scope', SCOPE),
        )
        out[n] = {'path': signed, 'revision': revision}
        out['directory'] = directory
    tamper(out[2]['path'], str(tmp_path / 'tampered.tar.gz'))
    out['tampered'] = str(tmp_path / 'tampered.tar.gz')
    out['public_key'] = pub
    return out


def test_fleet_follows_one_policy(opa_bin, nginx, tmp_path, policies, capsys):
    t_start = time.monotonic()
    rev1, rev2 = policies[1]['revision'], policies[2]['revision']
    assert rev1 != rev2
    path = manifest_mod.load(policies['directory']).rules[RULE].path
    www = tmp_path / 'www'
    www.mkdir()
    server = nginx(www)
    pub = Publisher(str(www))
    collector = Collector()

    def config(n, resource=RESOURCE):
        out = str(tmp_path / f'opa-{n}.yaml')
        args = ['opa-config', '--service-url', server.url]
        args += ['--bundle', f'{SERVICE}={resource}']
        args += ['--min-delay-seconds', str(MIN_DELAY)]
        args += ['--max-delay-seconds', str(MAX_DELAY)]
        args += ['--verification-key', policies['public_key']]
        args += ['--key-id', KEY_ID, '--scope', SCOPE]
        args += ['--status-url', collector.url]
        args += ['--persistence-directory', str(tmp_path / f'persist-{n}')]
        assert cli.main([*args, '-o', out]) == 0
        return out

    # As the guide runs a sidecar: decisions and reads only, and one of
    # the three on a unix socket.
    authz = authz_dir(tmp_path)

    def start(n, **kw):
        args = ['-c', config(n, **kw), '--authorization', 'basic', authz]
        opa = Opa(opa_bin, tmp_path, unix=n == 1, extra_args=args)
        opas_started.append(opa)
        return opa.start()

    # Two API workers of a service (two hosts: a cache each) on the same
    # URL, polling every second.
    def embedded(n):
        worker = Embedded(
            tmp_path,
            f'{server.url}/{RESOURCE}',
            policies['public_key'],
            SCOPE,
            tmp_path / f'embedded-cache-{n}',
            n,
        )
        workers_started.append(worker)
        return worker.start()

    def all_on(rev):
        return (
            revisions(opas) == [rev] * 3
            and active_revisions(workers) == [rev] * 2
        )

    def fleet_urls():
        return [o.url for o in opas] + [w.status_url() for w in workers]

    opas_started = []
    workers_started = []
    windows = {}
    measured = []
    try:
        # 1. Revision 1: every instance activates it and decides by it.
        published = pub.publish(policies[1]['path'])
        workers = [embedded(n) for n in range(2)]
        opas = [start(n) for n in range(3)]
        ready = wait_for(lambda: all_on(rev1), 30, 'revision 1')
        measured.append(
            f'revision 1: all 5 activated {ready - published:.2f}s '
            f'after publishing (start-up included)'
        )
        answers = [ask(o, path) for o in opas] + [w.decide() for w in workers]
        assert answers == [(rev1, False)] * 5, answers
        # The authorization policy, loaded beside the polled bundles,
        # holds: nobody rewrites the policy through the REST API.
        client = Transport(opas[1].url)
        try:
            code, _ = client.request('PUT', '/v1/policies/x', b'package x')
        finally:
            client.close()
        assert code == 401, code

        # 2. Revision 2 while checkers ask continuously.
        checkers = [Checker(o, path) for o in opas]
        checkers += [WorkerChecker(w, path) for w in workers]
        for c in checkers:
            c.start()
        wait_for(
            lambda: all(len(c.answers) > 5 for c in checkers),
            10,
            'checkers answered',
        )
        published = pub.publish(policies[2]['path'])
        activated = wait_for(lambda: all_on(rev2), 15, 'revision 2')
        switch = activated - published
        measured.append(
            f'revision 2: all 5 activated {switch:.2f}s after publishing '
            f'(OPAs polling every {MIN_DELAY}-{MAX_DELAY}s, embedded '
            f'every 1s)'
        )
        assert switch < MAX_DELAY + 5
        # A few answers more by revision 2 from each: none by revision 1.
        marks = [len(c.answers) for c in checkers]
        wait_for(
            lambda: all(
                len(c.answers) > m + 5
                for c, m in zip(checkers, marks, strict=True)
            ),
            10,
            'checkers answered after the switch',
        )
        for c in checkers:
            c.halt.set()
            c.join(timeout=10)
        for c in checkers:
            assert not c.failures, c.failures[:3]
            seen = [rev for rev, _ in c.answers]
            # Each answer is its revision's: never a mix within one.
            assert all(dec is (rev == rev2) for rev, dec in c.answers), (
                c.answers
            )
            # Once on revision 2, never revision 1 again.
            first2 = seen.index(rev2)
            assert set(seen[first2:]) == {rev2}, seen
            assert set(seen[:first2]) == {rev1}, seen
        counts = [
            (len(c.answers), sum(r == rev1 for r, _ in c.answers))
            for c in checkers
        ]
        measured.append(
            'checkers (3 OPAs, 2 embedded): '
            + ', '.join(
                f'{n} answers ({k} by rev 1, then rev 2)' for n, k in counts
            )
            + f'; {sum(c.unattributed for c in checkers)} embedded '
            'answers decided during a switch, not counted'
        )
        code, out = fleet_status(fleet_urls(), capsys)
        assert code == 0, out
        assert f'fleet: all 5 agree on {rev2}' in out
        measured.append(out)
        # Three polling rounds with nothing new: conditional GETs.
        steady = time.time()
        time.sleep(3 * MAX_DELAY)
        windows['steady'] = (steady, time.time())

        # 3. A tampered bundle: refused by all, revision 2 kept, said why.
        pub.publish(policies['tampered'])
        wait_for(
            lambda: (
                all('digest mismatch' in open(o.log).read() for o in opas)
                and all(
                    (w.status()['last_error'] or '').startswith('refused')
                    for w in workers
                )
            ),
            15,
            'every instance refused the tampered bundle',
        )
        assert all_on(rev2)
        assert all(ask(o, path) == (rev2, True) for o in opas)
        assert all(w.decide() == (rev2, True) for w in workers)
        code, out = fleet_status(fleet_urls(), capsys)
        assert code == 0, out
        assert out.count('digest mismatch') == 5, out
        refusal = workers[0].status()['last_error']
        assert out.count(refusal) == 2, out
        refused = [
            s
            for s in collector.statuses()
            if 'digest mismatch' in json.dumps(s.get('bundles'))
        ]
        assert refused, 'no status report of the refusal reached the collector'

        measured.append(out)
        # OPA retries a refused download sooner than its polling delay.
        time.sleep(3 * MAX_DELAY)
        # 4. nginx stopped: every instance keeps deciding by revision 2.
        windows['refusing'] = (windows['steady'][1], time.time())
        server.stop()
        time.sleep(MAX_DELAY + 0.5)
        assert all(ask(o, path) == (rev2, True) for o in opas)
        assert all(w.decide() == (rev2, True) for w in workers)
        assert all(
            'cannot download it' in (w.status()['last_error'] or '')
            for w in workers
        )

        # 5. Restarted with nginx still down: revision 2, from its copy.
        opas[0].stop()
        opas[0] = start(0)
        assert revisions(opas[:1]) == [rev2]
        assert ask(opas[0], path) == (rev2, True)
        workers[0].stop()
        assert not os.path.exists(workers[0].status_file)
        workers[0] = embedded(0)
        wait_for(
            lambda: active_revisions(workers[:1]) == [rev2],
            10,
            'the restarted embedded worker on revision 2',
        )
        assert workers[0].status()['active']['source'] == 'cache'
        assert workers[0].decide() == (rev2, True)

        # 6. One OPA pointed at a stale bundle is a straggler.
        server.start()
        pub.publish(policies[2]['path'])
        pub.publish(policies[1]['path'], name=STALE)
        opas[2].stop()
        opas[2] = start(3, resource=STALE)
        wait_for(
            lambda: revisions(opas) == [rev2, rev2, rev1], 15, 'stale one'
        )
        code, out = fleet_status(fleet_urls(), capsys)
        assert code == 1, out
        straggler = [line for line in out.splitlines() if 'STRAGGLER' in line]
        assert len(straggler) == 1 and opas[2].url in straggler[0], out
        assert 'differs from the majority' in straggler[0]
        assert f'the majority runs {rev2}' in out
        assert 'fleet: 1 of 5 straggling' in out
        measured.append(out)
    finally:
        for worker in workers_started:
            worker.stop()
        for opa in opas_started:
            opa.stop()
        collector.shutdown()
    # The five's requests to nginx: steady (revision 2 held, nothing
    # new) and while refusing the tampered bundle (OPA retries a failed
    # download sooner than its polling delay).
    polls = [r for r in server.requests() if r[2].endswith('.tar.gz')]
    for what, (begin, end) in windows.items():
        hits = [r for r in polls if begin <= r[0] < end]
        rate = len(hits) / (end - begin) * 60
        codes = sorted({r[3] for r in hits})
        measured.append(
            f'nginx, {what}: {len(hits)} requests in {end - begin:.1f}s '
            f'= {rate:.0f}/min for 3 OPAs and 2 embedded (HTTP {codes})'
        )
    measured.append(f'fleet test took {time.monotonic() - t_start:.1f}s')
    # After the last capsys.readouterr(): shown with -s, and on failure.
    print('\n' + '\n'.join(measured))


def test_secrets_stay_out_of_the_config_file(
    opa_bin, nginx, tmp_path, monkeypatch
):
    """An HS256-signed bundle behind a bearer token: the secret and the
    token reach OPA from its environment (or the token from a file), the
    configuration file holds neither, and a wrong secret is refused."""
    secret = 'hmac-secret-5f1c9a-of-at-least-32-bytes'
    token = 'bearer-token-7d2e4b'
    root = tmp_path / 'src'
    root.mkdir()
    directory = converted(root, open(corpus.policy_file(SERVICE)).read())
    secret_file = tmp_path / 'hmac.secret'
    secret_file.write_bytes(secret.encode())  # no newline: the env's value
    www = tmp_path / 'www'
    www.mkdir()
    revision = signed_bundle(
        directory,
        str(www / RESOURCE),
        *('--signing-key', str(secret_file), '--signing-alg', 'HS256'),
    )
    server = nginx(
        www,
        server_extra='if ($http_authorization != "Bearer %s") '
        '{ return 401; }' % token,
    )
    token_file = tmp_path / 'token'
    token_file.write_text(token)

    def config(name, *credentials):
        out = tmp_path / f'{name}.yaml'
        argv = ['opa-config', '--service-url', server.url]
        argv += ['--bundle', SERVICE, '--min-delay-seconds', '1']
        argv += ['--max-delay-seconds', '2', '--signing-alg', 'HS256']
        argv += ['--verification-key-env', 'BUNDLE_SECRET', *credentials]
        argv += ['--persistence-directory', str(tmp_path / name)]
        assert cli.main([*argv, '-o', str(out)]) == 0
        text = out.read_text()
        assert secret not in text and token not in text
        return str(out)

    monkeypatch.setenv('BUNDLE_SECRET', secret)
    monkeypatch.setenv('BUNDLE_TOKEN', token)
    opas = [
        Opa(opa_bin, tmp_path, extra_args=['-c', config(name, *creds)])
        for name, creds in (
            ('env', ['--bearer-token-env', 'BUNDLE_TOKEN']),
            ('file', ['--bearer-token-path', str(token_file)]),
        )
    ]
    try:
        for opa in opas:
            opa.start()  # returns once its bundle is activated
        assert revisions(opas) == [revision] * 2
        # The wrong secret: the bundle is downloaded and refused.
        monkeypatch.setenv('BUNDLE_SECRET', 'not-the-secret')
        wrong = Opa(
            opa_bin,
            tmp_path,
            extra_args=[
                '-c',
                config('wrong', '--bearer-token-env', 'BUNDLE_TOKEN'),
            ],
        )
        opas.append(wrong)
        # Opa.start() fails when OPA is not ready in START_TIMEOUT.
        monkeypatch.setattr(sidecar, 'START_TIMEOUT', 6.0)
        with pytest.raises(pytest.fail.Exception):
            wrong.start()
        assert revisions([wrong]) == [None]
        assert 'invalid HMAC signature' in open(wrong.log).read()
    finally:
        for opa in opas:
            opa.stop()
    # Every OPA request carried the token; without it, nginx says no.
    assert {r[3] for r in server.requests()} <= {200, 304}
    client = Transport(server.url)
    try:
        assert client.request('GET', f'/{RESOURCE}')[0] == 401
    finally:
        client.close()
