"""Our hash of data files against the real OPA's, on random documents.

OPA signs data.json by value (``hash.go``: a canonical JSON text), so our
``hash_file`` must write every value exactly as Go's encoder does: the
tricky strings (controls, ``"``, ``\\``, HTML characters, U+2028, DEL,
lone surrogates, astral characters, keys whose UTF-16 and UTF-8 orders
differ) and numbers as written (``1.0``, ``1E+2``, ``-0``, huge ones).
For each random document, written with random layout and escaping,
``opa build --signing-key`` signs it: the hash OPA signed must be ours
for the file as written, and our verifier must accept OPA's bundle.
"""

from __future__ import annotations

import base64
import json
import pathlib
import random
import tarfile

import pytest

from oslo_opa import bundle_signing
from oslo_opa.bundle_hashing import hash_file
from tests.functional.conftest import run_opa

KEYS = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'signed'
KEYS = KEYS / 'keys'
CHARS = (
    [chr(c) for c in range(0x20)]
    + list('"\\/<>&\'aZ0 ')
    + ['\x7f', 'é', '\u2028', '\u2029', '\ufffd', '\U0001f600', '\ud800']
    + ['\uffff', '\u00a0', '\u0800']
)
NUMBERS = [
    '0', '-0', '1', '1.0', '1.50', '1e2', '1E+2', '2.5e-3', '-17',
    '12345678901234567890123', '0.1', '1e400',
]  # fmt: skip


class Literal(str):
    """A number, written as is."""


def value(rng: random.Random, depth: int = 0):
    kind = rng.choice(['str', 'num', 'const', 'list', 'dict'][: 5 - depth])
    if kind == 'str':
        return ''.join(rng.choice(CHARS) for _ in range(rng.randrange(6)))
    if kind == 'num':
        return Literal(rng.choice(NUMBERS))
    if kind == 'const':
        return rng.choice([True, False, None])
    if kind == 'list':
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        value_key(rng): value(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def value_key(rng: random.Random) -> str:
    return ''.join(rng.choice(CHARS) for _ in range(rng.randrange(1, 4)))


def dump(v, rng: random.Random) -> str:
    """v as JSON text, with random spaces and escaping."""
    space = rng.choice(['', ' ', '\n  '])
    if isinstance(v, Literal):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=rng.random() < 0.5)
    if isinstance(v, list):
        return '[' + f',{space}'.join(dump(x, rng) for x in v) + ']'
    if isinstance(v, dict):
        items = [f'{dump(k, rng)}{space}:{dump(x, rng)}' for k, x in v.items()]
        return '{' + space + f',{space}'.join(items) + space + '}'
    return json.dumps(v)


def signed_hash(path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        sig = json.loads(tar.extractfile('/.signatures.json').read())
    body = sig['signatures'][0].split('.')[1]
    claims = json.loads(base64.urlsafe_b64decode(body + '=' * 3))
    return {f['name']: f['hash'] for f in claims['files']}


@pytest.mark.parametrize('seed', range(6))
def test_opa_signs_the_hash_we_compute(opa_bin, tmp_path, seed):
    rng = random.Random(seed)
    doc = {f'k{n}{value_key(rng)}': value(rng) for n in range(40)}
    text = dump(doc, rng).encode('utf-8', 'surrogatepass')
    if b'\xed\xa0\x80' in text:  # a raw lone surrogate is not UTF-8
        text = text.replace(b'\xed\xa0\x80', b'\\ud800')
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'data.json').write_bytes(text)
    out = tmp_path / 'b.tar.gz'
    proc = run_opa(
        opa_bin, 'build', '--bundle', str(source), '-o', str(out),
        '--signing-key', str(KEYS / 'rs256.pem'),
    )  # fmt: skip
    # OPA keeps every number as written (json.Number), 1e400 included,
    # so every document here builds.
    assert proc.returncode == 0, proc.stderr
    assert signed_hash(out)['data.json'] == hash_file('data.json', text)
    with tarfile.open(out) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    key = bundle_signing.read_key(str(KEYS / 'rs256.pub.pem'))
    bundle_signing.verify_files(files, key, 'RS256')
