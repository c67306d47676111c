"""What a bundle must be before the embedded driver activates it, and
how it is kept: roots (as OPA checks them), contents, the cache
directory, and what ``oslo-opa bundle`` puts in for the driver."""

from __future__ import annotations

import json
import os

import pytest

from oslo_opa import bundle, bundle_check, bundle_store
from tests import policies


def _files(roots=None, **extra):
    meta = {} if roots is None else {'roots': roots}
    files = {
        '.manifest': json.dumps(meta).encode(),
        'manifest.json': json.dumps(
            {'package_prefix': 'p', 'rules': {}, 'revision': 'p-1'}
        ).encode(),
        'p/a.rego': b'package p.a\n\nallow := true\n',
    }
    files.update({k.replace('__', '/'): v for k, v in extra.items()})
    return files


def test_roots_cover_modules_and_data_as_opa_checks():
    ok = bundle_check.check(
        _files(
            ['p', 'x/y'],
            **{'data.json': b'{"x": {"y": {"z": 1}}}'},
        )
    )
    assert ok.roots == ('p', 'x/y')
    assert ok.conversion == 'p-1'
    # No roots: OPA's default, everything.
    assert bundle_check.check(_files()).roots == ('',)
    with pytest.raises(bundle_check.BundleRefused, match='package q.b'):
        bundle_check.check(_files(['p'], **{'q__b.rego': b'package q.b\n'}))
    with pytest.raises(bundle_check.BundleRefused, match='data at path /x/w'):
        bundle_check.check(
            _files(['p', 'x/y'], **{'data.json': b'{"x": {"w": 1}}'})
        )
    with pytest.raises(bundle_check.BundleRefused, match='overlapped'):
        bundle_check.check(_files(['p', 'p/a']))
    # A root is a path prefix by segments, not by characters.
    with pytest.raises(bundle_check.BundleRefused, match='package pp.a'):
        bundle_check.check(_files(['p'], **{'pp__a.rego': b'package pp.a\n'}))


def test_package_paths_read_as_opa_reads_them():
    read = bundle_check.package_path
    assert read(b'# c\npackage data.a.b\n', 'x') == ['a', 'b']
    assert read(b'package a["b.c"].d # x\n', 'x') == ['a', 'b.c', 'd']
    with pytest.raises(bundle_check.BundleRefused, match='no package'):
        read(b'x := 1\n', 'x.rego')


def test_the_embedded_driver_needs_manifest_json_and_top_level_data():
    files = _files()
    del files['manifest.json']
    with pytest.raises(bundle_check.BundleRefused, match='manifest.json'):
        bundle_check.check(files)
    with pytest.raises(bundle_check.BundleRefused, match='top-level'):
        bundle_check.check(_files(**{'x__data.json': b'{}'}))


def test_a_signed_bundle_without_a_key_is_refused_as_opa_does():
    with pytest.raises(bundle_check.BundleRefused, match='is signed'):
        bundle_check.check(_files(**{'.signatures.json': b'{}'}))


def test_the_store_reuses_a_directory_only_when_it_holds_the_bundle(
    tmp_path,
):
    store = bundle_store.BundleStore(str(tmp_path))
    files = {'a.rego': b'package a\n', 'd/b.rego': b'package b\n'}
    sha = bundle_store.digest(b'raw')
    first = store.write_out(sha, files)
    assert store.write_out(sha, files) == first
    with open(os.path.join(first, 'a.rego'), 'wb') as f:
        f.write(b'package evil\n')
    other = store.write_out(sha, files)
    assert other != first
    with open(os.path.join(other, 'a.rego'), 'rb') as f:
        assert f.read() == b'package a\n'


def test_the_store_keeps_the_last_revisions_and_the_pointer_last(tmp_path):
    store = bundle_store.BundleStore(str(tmp_path))
    shas = []
    for n in range(5):
        raw = f'bundle {n}'.encode()
        sha = bundle_store.digest(raw)
        shas.append(sha)
        store.write_out(sha, {'x.rego': raw})
        store.commit(raw, {'url': 'u', 'revision': str(n)})
    pointer = store.pointer()
    assert pointer['revision'] == '4' and pointer['sha256'] == shas[-1]
    assert store.tarball(shas[-1]) == b'bundle 4'
    kept = sorted(e for e in os.listdir(tmp_path) if e.startswith('bundle-'))
    assert kept == sorted(f'bundle-{s}.tar.gz' for s in shas[-3:])
    dirs = [e for e in os.listdir(tmp_path) if e.startswith('r-')]
    assert len(dirs) == 3
    with pytest.raises(OSError):
        store.tarball(shas[0])


def test_one_bundle_file_serves_opa_and_the_embedded_driver(tmp_path):
    directory = policies.converted(str(tmp_path), policies.THINGS)
    plain = bundle.bundle_files(directory)
    with_prebuilt = bundle.bundle_files(directory, prebuilt=True)
    assert 'manifest.json' in plain
    assert not any(n.startswith('bundles/') for n in plain)
    rbb = [n for n in with_prebuilt if n.startswith('bundles/')]
    assert rbb and all(n.endswith('.rbb') for n in rbb)
    # The fast bundles are derived (manifest.json holds their SHA-256):
    # the revision is the same with or without them.
    assert json.loads(plain['.manifest']) == json.loads(
        with_prebuilt['.manifest']
    )
    # Roots are unchanged: OPA reads neither manifest.json nor bundles/.
    assert json.loads(plain['.manifest'])['roots'] == [
        'oslo_opa/batch/p',
        'oslo_opa/lib',
        'p',
    ]
    checked = bundle_check.check(with_prebuilt)
    assert 'batch/p.rego' not in checked.files
    assert set(rbb) <= set(checked.files)
    for mode in ('exclude', 'only'):
        assert 'manifest.json' not in bundle.bundle_files(directory, mode)


FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'signed')


@pytest.mark.parametrize(
    'name, key',
    [
        ('rs256', 'rs256.pub.pem'),
        ('es256', 'es256.pub.pem'),
        ('hs256', 'hs256.secret'),
    ],
)
def test_the_key_file_alone_verifies_what_opa_signed(name, key):
    """opa build --signing-key wrote these (tests/fixtures/signed): the
    algorithm follows from the key file; the signature passes and the
    bundle is refused only for what opa build left out (manifest.json),
    and with another key, for the signature."""
    from oslo_opa import bundle_fetch, bundle_signing

    with open(os.path.join(FIXTURES, f'{name}.tar.gz'), 'rb') as f:
        files = bundle_fetch.read_tarball(f.read())
    secret = bundle_signing.read_key(os.path.join(FIXTURES, 'keys', key))
    assert bundle_check.key_alg(secret) == name.upper()
    with pytest.raises(bundle_check.BundleRefused, match='no manifest.json'):
        bundle_check.check(files, secret)
    other = bundle_signing.read_key(
        os.path.join(FIXTURES, 'keys', 'rs256.pub.pem')
    )
    if name != 'rs256':
        with pytest.raises(bundle_check.BundleRefused, match='signature'):
            bundle_check.check(files, other)
