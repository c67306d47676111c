"""One bundle file for OPA and the embedded driver (issue 12).

``oslo-opa bundle --prebuilt --signing-key``: OPA 1.22 loads it with ``opa run
--server --bundle FILE --verification-key`` (its manifest.json and
bundles/*.rbb are no data to it, the roots are unchanged) and ``opa
build -b`` rebuilds it; the embedded driver downloads the same bytes
from a bundle server and decides every request as OPA does.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oslo_opa import bundle, bundle_fetch, decider
from oslo_opa.convert import convert, load_rule_table
from tests import corpus
from tests.bundle_server import BundleServer
from tests.differential import rule_inputs
from tests.functional.test_opa_sidecar import SMALL, Opa


@pytest.fixture(scope='module')
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp('fleet')
    directory = str(root / SMALL)
    convert(directory, policy_files=[corpus.policy_file(SMALL)], tests=False)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = root / 'public.pem'
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # As oslo-opa bundle --prebuilt --signing-key writes it.
    path = root / 'bundle.tar.gz'
    bundle.build(directory, str(path), prebuilt=True, signing_key=private)
    return root, str(path), str(public)


def test_opa_and_the_embedded_driver_load_the_same_file_and_agree(
    opa_bin, signed
):
    root, path, public = signed
    with open(path, 'rb') as f:
        raw = f.read()
    names = bundle_fetch.read_tarball(raw)
    assert 'manifest.json' in names
    assert any(n.startswith('bundles/') for n in names)
    opa = Opa(
        opa_bin,
        root,
        bundles=[path],
        extra_args=['--verification-key', public],
    )
    opa.start()
    server = BundleServer(raw)
    http = embedded = None
    try:
        opa_manifest = json.loads(names['.manifest'])
        # OPA took the bundle whole: its revision and roots are ours,
        # and the extra files are no data to it.
        client = opa.transport()
        _, data = client.request('GET', '/v1/data')
        client.close()
        assert set(json.loads(data)['result']) == {SMALL, 'oslo_opa'}
        # The http driver projects inputs from the conversion's manifest.
        http = decider.load(
            str(root / SMALL),
            driver='http',
            cache_size=0,
            **opa.client_options(),
        )
        embedded = decider.load(
            driver='embedded',
            cache_size=0,
            bundle_url=server.url,
            bundle_cache_dir=str(root / 'cache'),
            bundle_verification_key=public,
            bundle_polling_interval=60,
        )
        assert embedded.driver.poller.wait_activated(30)
        active = embedded.driver.bundle_status()['active']
        assert active['revision'] == opa_manifest['revision']
        assert active['roots'] == opa_manifest['roots']
        assert active['signed'] is True
        table = load_rule_table(policy_files=[corpus.policy_file(SMALL)])
        asked = 0
        for rule in sorted(table.rules):
            for creds, target in rule_inputs(table, rule, 4):
                want = embedded.decide(rule, target, creds)
                assert http.decide(rule, target, creds) == want, (
                    rule,
                    creds,
                    target,
                )
                asked += 1
        assert asked >= 40
    finally:
        for made in (http, embedded):
            if made is not None:
                made.close()
        server.stop()
        opa.stop()


def test_opa_build_rebuilds_it(opa_bin, signed, tmp_path):
    root, path, public = signed
    out = tmp_path / 'rebuilt.tar.gz'
    proc = subprocess.run(
        [
            opa_bin,
            'build',
            '-b',
            path,
            '--verification-key',
            public,
            '-o',
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rebuilt = bundle_fetch.read_tarball(out.read_bytes())
    original = bundle_fetch.read_tarball(open(path, 'rb').read())
    assert (
        json.loads(rebuilt['.manifest'])['roots']
        == (json.loads(original['.manifest'])['roots'])
    )
    # opa build keeps Rego and data only: such a rebuild no longer
    # serves the embedded driver (it says so: no manifest.json).
    assert 'manifest.json' not in rebuilt
