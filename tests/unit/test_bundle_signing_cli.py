"""``oslo-opa bundle --signing-key``: a signed bundle, still reproducible.

OPA accepting these bundles, and refusing them once tampered with, is in
``tests/functional/test_bundle_signing_opa.py``.
"""

from __future__ import annotations

import pathlib
import tarfile

import pytest

from oslo_opa import bundle_signing, cli
from tests.policies import THINGS, converted

KEYS = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'signed'
KEYS = KEYS / 'keys'


def files_of(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.fixture(scope='module')
def policy(tmp_path_factory) -> str:
    return converted(str(tmp_path_factory.mktemp('p')), THINGS)


@pytest.mark.parametrize(
    'alg,private,public',
    [
        ('RS256', 'rs256.pem', 'rs256.pub.pem'),
        ('ES256', 'es256.pem', 'es256.pub.pem'),
        ('HS256', 'hs256.secret', 'hs256.secret'),
    ],
)
def test_a_signed_bundle_verifies(
    policy, tmp_path, capsys, alg, private, public
):
    out = tmp_path / 'b.tar.gz'
    argv = ['bundle', policy, '-o', str(out), '--signing-key']
    argv += [str(KEYS / private), '--signing-alg', alg, '--key-id', 'k1']
    assert cli.main(argv) == 0
    assert f'signed with {alg}, key id k1' in capsys.readouterr().out
    files = files_of(out)
    key = bundle_signing.read_key(str(KEYS / public))
    bundle_signing.verify_files(files, key, alg, key_id='k1')
    assert '.manifest' in files and '.signatures.json' in files


def test_signed_bundles_are_reproducible_and_scoped(policy, tmp_path):
    outs = [tmp_path / 'a.tar.gz', tmp_path / 'b.tar.gz']
    for out in outs:
        argv = ['bundle', policy, '-o', str(out), '--scope', 'write']
        argv += ['--signing-key', str(KEYS / 'rs256.pem')]
        assert cli.main(argv) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    key = bundle_signing.read_key(str(KEYS / 'rs256.pub.pem'))
    bundle_signing.verify_files(files_of(outs[0]), key, scope='write')


def test_unsigned_bundles_are_as_before(policy, tmp_path):
    out = tmp_path / 'b.tar.gz'
    assert cli.main(['bundle', policy, '-o', str(out)]) == 0
    assert '.signatures.json' not in files_of(out)


@pytest.mark.parametrize(
    'extra,message',
    [
        (['--key-id', 'k'], '--key-id needs --signing-key'),
        (['--signing-key', '/nonexistent.pem'], '/nonexistent.pem: cannot'),
        (
            ['--signing-key', str(KEYS / 'rs256.pub.pem')],
            'needs an unencrypted PEM private key',
        ),
        (
            ['--signing-key', str(KEYS / 'rs256.pem'), '--signing-alg', 'X'],
            "unsupported signing algorithm 'X'",
        ),
    ],
)
def test_bad_signing_options_exit_2(policy, tmp_path, capsys, extra, message):
    out = tmp_path / 'b.tar.gz'
    assert cli.main(['bundle', policy, '-o', str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1
    assert not out.exists()
