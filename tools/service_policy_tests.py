#!/usr/bin/env python3
"""A real service's own policy tests, natively and through Rego (``tox -e
service``).

Installs the pinned service from PyPI into a cached venv, runs the chosen
policy tests with stestr (the service's own runner) twice, unchanged:
natively, then with every decision made by Rego
(:mod:`oslo_opa.testing.rego_run`, ``RegoEnforcement(shadow=True)``).
Fails (exit 1) unless the outcomes are identical test by test, Rego made
decisions and shadow mode found no difference.  Prints both wall times
and their ratio.

The venv is cached under ``~/.cache/oslo-opa/service-venvs`` (or
``$XDG_CACHE_HOME``), keyed by the Python version, the pin, the
constraints file, oslo.opa's requirements and entry points, and this
checkout's path (oslo.opa is installed editable from it, so code changes
need no rebuild).  The venv's Python is this one, or the newest
``python3.X`` on PATH when this one is older than cinder supports.  Exit
3: the venv must be built and the package index is unreachable.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
HERE = REPO / 'tools' / 'service_policy'
SERVICE = 'cinder'
VERSION = '29.0.0'
# Runs cinder/tests/unit/policies with stestr (no pytest: cinder's
# TestCase clears its attributes at cleanup, which pytest's unittest
# support trips on).
TEST_DEPS = ('stestr', 'ddt', 'oslotest', 'testtools', 'fixtures')
TEST_PATH = 'cinder/tests/unit/policies'
# The default selection, so that CI's run stays near three minutes: 915
# of the 2,045 tests, every module but those of volumes and volume types
# (test_volume*, test_type_extra_specs, test_default_volume_types), which
# take 70% of the native time.  '' runs them all.
DEFAULT_TESTS = (
    r'cinder\.tests\.unit\.policies\.test_('
    r'attachments|backups|group_actions|group_snapshots|group_types|'
    r'groups|limits|messages|quota_class|quotas|snapshot_actions|'
    r'snapshot_metadata|snapshots)\.'
)
NO_INDEX_EXIT = 3
# cinder's Requires-Python; oslo.opa itself runs on 3.10.
MIN_PYTHON = (3, 11)

# Run by the venv's Python: test id -> status from a subunit v2 stream.
OUTCOMES = """
import json, sys
import subunit, testtools
found = {}
def record(test):
    if test['status'] != 'exists':
        found[test['id']] = test['status']
with open(sys.argv[1], 'rb') as f:
    stream = subunit.ByteStreamToStreamResult(f, non_subunit_name='stdout')
    result = testtools.StreamToDict(record)
    result.startTestRun()
    stream.run(result)
    result.stopTestRun()
json.dump(found, sys.stdout)
"""


def cache_root() -> pathlib.Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    return pathlib.Path(base) / 'oslo-opa' / 'service-venvs'


def constraints() -> pathlib.Path:
    return HERE / f'{SERVICE}-{VERSION}-constraints.txt'


def interpreter() -> tuple[str, str]:
    """A Python the service runs on (this one, or a newer python3.X on
    PATH), and its full version."""
    candidates = [sys.executable]
    candidates += [f'python3.{minor}' for minor in range(14, 10, -1)]
    for name in candidates:
        path = shutil.which(name) or ''
        if not path:
            continue
        probe = 'import sys; print(sys.version); '
        probe += f'sys.exit(sys.version_info < {MIN_PYTHON})'
        found = subprocess.run(
            [path, '-c', probe], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            return path, found.stdout.strip()
    minimum = '.'.join(map(str, MIN_PYTHON))
    sys.exit(f'{SERVICE} {VERSION} needs Python {minimum}+: none on PATH')


def venv_key(version: str) -> str:
    h = hashlib.sha256()
    h.update(version.encode())
    h.update(f'{SERVICE}=={VERSION} {TEST_DEPS} {REPO}'.encode())
    for path in (constraints(), REPO / 'requirements.txt', REPO / 'setup.cfg'):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def index_reachable() -> bool:
    url = os.environ.get('PIP_INDEX_URL', 'https://pypi.org/simple/')
    if not url.startswith(('https://', 'http://')):
        return True  # a local index: pip will say
    try:
        # The scheme is checked above.
        with urllib.request.urlopen(url.rstrip('/') + '/pip/', timeout=15):  # noqa: S310
            return True
    except OSError:
        return False


def pip(venv: pathlib.Path, *args: str) -> None:
    subprocess.run(
        [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q',
         '--disable-pip-version-check', *args],
        check=True,
    )  # fmt: skip


def ensure_venv() -> tuple[pathlib.Path, float]:
    """The cached venv, built when missing, and the seconds it took."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    python, version = interpreter()
    venv = root / f'{SERVICE}-{VERSION}-{venv_key(version)}'
    start = time.monotonic()
    # Two runs at once (tox -e service and the functional test) build
    # the venv once.
    with open(root / f'{venv.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / '.complete').exists():
            return venv, time.monotonic() - start
        if not index_reachable():
            print('the package index is unreachable', file=sys.stderr)
            sys.exit(NO_INDEX_EXIT)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, '-m', 'venv', str(venv)], check=True)
        pip(
            venv,
            '-c', str(constraints()),
            f'{SERVICE}=={VERSION}', *TEST_DEPS,
            '-r', str(REPO / 'requirements.txt'),
        )  # fmt: skip
        pip(venv, '--no-deps', '-e', str(REPO))
        (venv / '.complete').touch()
    return venv, time.monotonic() - start


def run_pass(
    venv: pathlib.Path,
    work: pathlib.Path,
    name: str,
    tests: str,
    concurrency: int,
    rego: bool,
) -> tuple[dict[str, str], float, float]:
    """One stestr run: each test's status, its wall time and its CPU
    time (less sensitive than the wall time to the machine's other
    jobs)."""
    python = str(venv / 'bin' / 'python')
    env = dict(os.environ)
    env.pop('PYTHON', None)
    if rego:
        env['PYTHON'] = f'{python} -m oslo_opa.testing.rego_run'
        env['OSLO_OPA_REGO_TOTALS'] = str(work / 'totals')
    stream = work / f'{name}.subunit'
    cmd = [str(venv / 'bin' / 'stestr'), 'run', '--subunit']
    cmd += ['--concurrency', str(concurrency)]
    if tests:
        cmd.append(tests)
    start = time.monotonic()
    cpu = _children_cpu()
    # The tests' own warnings go to a log, shown when the run fails.
    with open(stream, 'wb') as out, open(work / 'log', 'ab') as log:
        # Exit status ignored: failures are outcomes, compared below.
        subprocess.run(
            cmd, cwd=work, env=env, stdout=out, stderr=log, check=False
        )
    elapsed = time.monotonic() - start
    cpu = _children_cpu() - cpu
    parsed = subprocess.run(
        [python, '-c', OUTCOMES, str(stream)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(parsed.stdout), elapsed, cpu


def _children_cpu() -> float:
    # stestr waits for its workers, so their time is counted too.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def totals(directory: pathlib.Path) -> dict:
    """The fixture's counts, summed over stestr's worker processes."""
    keys = ('tests', 'tests_deciding', 'decisions', 'conversions')
    out: dict = dict.fromkeys(keys, 0)
    out['convert_seconds'] = 0.0
    out['differences'] = []
    for path in sorted(directory.glob('rego-*.json')):
        found = json.loads(path.read_text())
        for key in (*keys, 'convert_seconds'):
            out[key] += found[key]
        out['differences'] += found['differences']
    return out


def compare(native: dict[str, str], rego: dict[str, str]) -> list[str]:
    problems = [
        f'{test}: native {native.get(test)}, Rego {rego.get(test)}'
        for test in sorted(native.keys() | rego.keys())
        if native.get(test) != rego.get(test)
    ]
    if not native:
        problems.append('no test ran')
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--tests',
        default=DEFAULT_TESTS,
        help="stestr's test filter (a regex); '' for every policy test",
    )
    parser.add_argument('--concurrency', type=int, default=os.cpu_count())
    parser.add_argument('--json', help='write the summary there too')
    args = parser.parse_args(argv)

    venv, install = ensure_venv()
    site = subprocess.run(
        [str(venv / 'bin' / 'python'), '-c',
         'import sysconfig; print(sysconfig.get_path("purelib"))'],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix='oslo-opa-service-') as tmp:
        work = pathlib.Path(tmp)
        (work / '.stestr.conf').write_text(
            f'[DEFAULT]\ntest_path={site}/{TEST_PATH}\ntop_dir={site}\n'
        )
        run = (venv, work)
        native, native_s, native_cpu = run_pass(
            *run, 'native', args.tests, args.concurrency, rego=False
        )
        rego, rego_s, rego_cpu = run_pass(
            *run, 'rego', args.tests, args.concurrency, rego=True
        )
        counted = totals(work / 'totals')
        log_tail = (work / 'log').read_text(errors='replace')[-4000:]

    problems = compare(native, rego)
    if counted['decisions'] <= 0:
        problems.append('Rego made no decision')
    if counted['tests'] != len(rego):
        problems.append(
            f'the fixture wrapped {counted["tests"]} tests, {len(rego)} ran'
        )
    problems += [
        f'shadow difference: {rule!r}: Rego {mine}, oslo.policy {theirs}'
        for rule, mine, theirs in counted['differences']
    ]
    statuses: dict[str, int] = {}
    for status in native.values():
        statuses[status] = statuses.get(status, 0) + 1
    summary = {
        'service': f'{SERVICE}=={VERSION}',
        'tests': len(native),
        'statuses': statuses,
        'install_seconds': round(install, 1),
        'native_seconds': round(native_s, 1),
        'rego_seconds': round(rego_s, 1),
        'ratio': round(rego_s / native_s, 2) if native_s else None,
        'native_cpu_seconds': round(native_cpu, 1),
        'rego_cpu_seconds': round(rego_cpu, 1),
        'cpu_ratio': round(rego_cpu / native_cpu, 2) if native_cpu else None,
        'tests_deciding': counted['tests_deciding'],
        'decisions': counted['decisions'],
        'shadow_differences': len(counted['differences']),
        'conversions': counted['conversions'],
        'convert_seconds': round(counted['convert_seconds'], 1),
        'problems': problems,
    }
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(summary, f, indent=1)
    if problems:
        print(f"The tests' stderr (end):\n{log_tail}")
    for line in problems[:50]:
        print(f'DIFFERENT: {line}')
    print(
        f'{SERVICE} {VERSION}: {len(native)} tests {statuses}; venv '
        f'{install:.1f}s; native {native_s:.1f}s, Rego {rego_s:.1f}s '
        f'(ratio {summary["ratio"]}; CPU {native_cpu:.1f}s against '
        f'{rego_cpu:.1f}s, ratio {summary["cpu_ratio"]}); '
        f'{counted["decisions"]} decisions in '
        f'{counted["tests_deciding"]} tests, '
        f'{len(counted["differences"])} shadow differences'
    )
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
