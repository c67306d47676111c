"""The ``bundle`` section of ``tox -e bench``: the embedded driver
activating neutron's bundle from a bundle server (``bundle_url``).

Each variant runs in a fresh process (``python bench_bundle.py --child
...``) against a real HTTP server in that process:

* activation: from the driver's creation to the first bundle in force
  (download, read, check, write out, load), and the RSS it adds;
* swap: a second revision published, one poll activating it (both
  policies are alive while it loads), its time and the RSS added;
* a first pass: one decision per rule for one caller, right after,
  which compiles or (with ``--prebuilt``) loads the fast bundles;
* a 304 poll.

Variants: the bundle as ``oslo-opa bundle`` writes it, and with
``--prebuilt``; each unsigned and signed (RS256).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, 'tests', 'fixtures', 'corpus')


def _rss_kib(field: str = 'VmRSS') -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(work: str, variant: str) -> dict:
    sys.path.insert(0, ROOT)
    from oslo_opa.drivers.base import Settings
    from oslo_opa.drivers.embedded import EmbeddedDriver
    from tests.bundle_server import BundleServer

    with open(os.path.join(work, f'{variant}-1.tar.gz'), 'rb') as f:
        first = f.read()
    with open(os.path.join(work, f'{variant}-2.tar.gz'), 'rb') as f:
        second = f.read()
    server = BundleServer(first)
    options = {
        'bundle_url': server.url,
        'bundle_cache_dir': os.path.join(work, f'cache-{variant}'),
        'bundle_polling_interval': 3600,
    }
    imports = 0.0
    if 'signed' in variant:
        options['bundle_verification_key'] = os.path.join(work, 'pub.pem')
        # Once per process, whatever the bundle: counted apart.
        before = _rss_kib()
        from oslo_opa import bundle_signing  # noqa: F401

        imports = (_rss_kib() - before) / 1024
    rss0 = _rss_kib()
    start = time.perf_counter()
    driver = EmbeddedDriver(Settings(options=options))
    assert driver.poller.wait_activated(120)
    activation = time.perf_counter() - start
    rss1 = _rss_kib()
    rules = list(driver.manifest.rules)
    creds = {'roles': ['member', 'reader'], 'project_id': 'p1'}
    target = {'project_id': 'p1', 'tenant_id': 'p1'}

    def one_pass() -> float:
        began = time.perf_counter()
        for rule in rules:
            driver.decide(rule, driver.input_for(rule, creds, target))
        return time.perf_counter() - began

    first_pass = one_pass()
    rss2 = _rss_kib()
    server.publish(second)
    start = time.perf_counter()
    assert driver.poller.poll_once()
    swap = time.perf_counter() - start
    rss3 = _rss_kib()
    hwm = _rss_kib('VmHWM')
    second_pass = one_pass()
    start = time.perf_counter()
    assert not driver.poller.poll_once()
    not_modified = time.perf_counter() - start
    phases = _phases(driver, first, options.get('bundle_verification_key'))
    driver.close()
    server.stop()
    return {
        'phases': phases,
        'variant': variant,
        'imports_mib': imports,
        'bytes': len(first),
        'rules': len(rules),
        'activation_ms': activation * 1e3,
        'activation_mib': (rss1 - rss0) / 1024,
        'first_pass_ms': first_pass * 1e3,
        'first_pass_mib': (rss2 - rss1) / 1024,
        'swap_ms': swap * 1e3,
        'swap_mib': (rss3 - rss2) / 1024,
        'peak_over_start_mib': (hwm - rss0) / 1024,
        'pass_after_swap_ms': second_pass * 1e3,
        'not_modified_ms': not_modified * 1e3,
    }


def _phases(driver, raw: bytes, key_file: str | None) -> dict:
    """Where an activation's time goes, on raw again (into a store of
    its own): read, check, write out, load."""
    import tempfile

    from oslo_opa import bundle_check, bundle_fetch, bundle_signing
    from oslo_opa.bundle_store import BundleStore, digest

    key = bundle_signing.read_key(key_file) if key_file else None
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        files = bundle_fetch.read_tarball(raw)
        out['read'] = time.perf_counter() - began
        began = time.perf_counter()
        checked = bundle_check.check(files, key)
        out['check'] = time.perf_counter() - began
        began = time.perf_counter()
        directory = BundleStore(scratch).write_out(digest(raw), checked.files)
        out['write'] = time.perf_counter() - began
        began = time.perf_counter()
        driver._load(directory)
        out['load'] = time.perf_counter() - began
    return {k: v * 1e3 for k, v in out.items()}


def _prepare(work: str) -> list[str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from oslo_opa import bundle, bundle_signing
    from oslo_opa.convert import convert

    with open(os.path.join(CORPUS, 'neutron.policy.yaml')) as f:
        text = f.read()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(work, 'pub.pem'), 'wb') as f:
        f.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    variants = []
    for n, extra in ((1, ''), (2, '\n"bench_extra": "role:member"\n')):
        source = os.path.join(work, f'neutron-{n}.yaml')
        with open(source, 'w') as f:
            f.write(text + extra)
        out = os.path.join(work, f'neutron-{n}')
        convert(out, policy_files=[source], tests=False)
        for prebuilt in (False, True):
            files = bundle.bundle_files(out, prebuilt=prebuilt)
            name = 'prebuilt' if prebuilt else 'plain'
            for signed in (False, True):
                if signed:
                    files = dict(files)
                    files['.signatures.json'] = bundle_signing.sign_files(
                        files, private
                    )
                variant = f'{name}-signed' if signed else name
                with open(
                    os.path.join(work, f'{variant}-{n}.tar.gz'), 'wb'
                ) as f:
                    f.write(bundle.tarball(files))
                if variant not in variants:
                    variants.append(variant)
    return variants


def bench_bundle(work: str) -> None:
    print("== bundle: the embedded driver activating neutron's bundle")
    variants = _prepare(work)
    for variant in variants:
        proc = subprocess.run(
            [sys.executable, __file__, '--child', work, variant],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(f'{variant}: failed: {proc.stderr[-2000:]}')
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        parts = [
            f'{variant:16} {r["bytes"] / 1024:5.0f} KiB, {r["rules"]} rules:',
            f'activation {r["activation_ms"]:.0f} ms',
            f'+{r["activation_mib"]:.1f} MiB;',
            f'first pass {r["first_pass_ms"]:.0f} ms',
            f'+{r["first_pass_mib"]:.1f} MiB;',
            f'swap {r["swap_ms"]:.0f} ms +{r["swap_mib"]:.1f} MiB',
            f'(peak +{r["peak_over_start_mib"]:.1f} MiB over start);',
            f'pass after swap {r["pass_after_swap_ms"]:.0f} ms;',
            f'304 poll {r["not_modified_ms"]:.1f} ms',
        ]
        parts.append(
            '[activation: '
            + ', '.join(f'{k} {v:.0f} ms' for k, v in r['phases'].items())
            + ']'
        )
        if r['imports_mib']:
            parts.append(
                f'(PyJWT and cryptography imported before: '
                f'+{r["imports_mib"]:.1f} MiB)'
            )
        print(' '.join(parts))


if __name__ == '__main__':
    if sys.argv[1:2] == ['--child']:
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix='oslo-opa-bench-') as w:
            bench_bundle(w)
