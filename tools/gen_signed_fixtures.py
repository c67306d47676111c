#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Regenerate tests/fixtures/signed: bundles the real OPA signed.

``tests/unit/test_bundle_signing_opa_fixtures.py`` checks our verifier
against what ``opa build --signing-key`` writes, so the bundles must come
from OPA itself, not from us.  The policy is ``tests.policies.THINGS``,
converted, with a little data; ``oslo-opa bundle`` lays out its files and
OPA signs them (``opa build --bundle .`` in that directory, so the names
it signs are the bundle's own).

Usage::

    python3 tools/gen_signed_fixtures.py [--opa PATH] [--new-keys]

The keys in ``tests/fixtures/signed/keys`` are kept unless --new-keys
(they are test-only keys, checked in on purpose).  With the same keys and
OPA, the RS256 and HS256 bundles come out byte for byte the same; ES256
signatures are random, so that bundle changes at every run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from oslo_opa import bundle  # noqa: E402
from tests.policies import THINGS, converted  # noqa: E402

FIXTURES = REPO / 'tests' / 'fixtures' / 'signed'
KEYS = FIXTURES / 'keys'
# Strings Go's JSON encoder escapes differently from ours (HTML
# characters, U+2028), and non-ASCII: opa build rewrites data.json.
DATA = {'oslo_fixture': {'names': ['é', '<a&b>', 'x\u2028y'], 'n': 1.5}}
# name -> (algorithm, signing key, key id, extra claims); with claims,
# opa build ignores the key id (cmd/build.go).
BUNDLES = {
    'rs256': ('RS256', 'rs256.pem', 'test-rs256', None),
    'es256': ('ES256', 'es256.pem', 'test-es256', None),
    'hs256': ('HS256', 'hs256.secret', 'test-hs256', None),
    'rs256-scope': ('RS256', 'rs256.pem', 'test-rs256', {'scope': 'write'}),
}


def _opa(explicit: str | None) -> str:
    found = explicit or os.environ.get('OSLO_OPA_BIN')
    if found:
        return found
    out = subprocess.run(
        ['bash', str(REPO / 'tools' / 'install-opa.sh')],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _write_pem(private, name: str) -> None:
    (KEYS / f'{name}.pem').write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (KEYS / f'{name}.pub.pem').write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def make_keys(new: bool) -> None:
    """Test-only keys, made once: the fixtures are signed with them."""
    KEYS.mkdir(parents=True, exist_ok=True)
    if new or not (KEYS / 'rs256.pem').exists():
        _write_pem(rsa.generate_private_key(65537, 2048), 'rs256')
    if new or not (KEYS / 'es256.pem').exists():
        _write_pem(ec.generate_private_key(ec.SECP256R1()), 'es256')
    if new or not (KEYS / 'hs256.secret').exists():
        # No newline: OPA takes the file's bytes as the secret.
        secret = os.urandom(32).hex().encode('ascii')
        (KEYS / 'hs256.secret').write_bytes(secret)


def bundle_source(workdir: str) -> str:
    """The files of THINGS's bundle (with DATA), as a directory."""
    policy = converted(workdir, THINGS)
    data = os.path.join(workdir, 'data.json')
    with open(data, 'w') as f:
        json.dump(DATA, f)
    source = os.path.join(workdir, 'bundle')
    # With the helper library, which the rules call: OPA compiles them.
    files = bundle.bundle_files(policy, data_paths=[data])
    for name, content in files.items():
        path = os.path.join(source, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(content)
    return source


def sign(opa: str, source: str, workdir: str) -> None:
    for name, (alg, key, key_id, claims) in BUNDLES.items():
        cmd = [
            opa, 'build', '--bundle', '.',
            '--signing-key', str(KEYS / key), '--signing-alg', alg,
            '--verification-key-id', key_id,
            '-o', str(FIXTURES / f'{name}.tar.gz'),
        ]  # fmt: skip
        if claims:
            path = os.path.join(workdir, f'{name}-claims.json')
            with open(path, 'w') as f:
                json.dump(claims, f)
            cmd += ['--claims-file', path]
        subprocess.run(cmd, cwd=source, check=True)
        print(f'wrote {FIXTURES / name}.tar.gz ({alg}, key id {key_id})')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--opa', help='the opa binary (default: built)')
    parser.add_argument(
        '--new-keys', action='store_true', help='make new test keys'
    )
    args = parser.parse_args()
    opa = _opa(args.opa)
    make_keys(args.new_keys)
    with tempfile.TemporaryDirectory() as workdir:
        sign(opa, bundle_source(workdir), workdir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
