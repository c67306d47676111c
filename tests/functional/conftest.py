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

"""Fixtures for the functional tests, which run a real OPA.

The OPA binary is ``$OSLO_OPA_BIN`` when set, otherwise the one that
``tools/install-opa.sh`` builds (once, then cached). Without Go the tests
are skipped, unless ``OSLO_OPA_REQUIRE_OPA=1`` (as in CI), where a missing
OPA is a failure.

The bundle-polling tests also run nginx: ``$OSLO_OPA_NGINX`` when set,
otherwise the one ``tools/install-nginx.sh`` finds or installs; without
apt-get (or root) they are skipped, with the same exception.

The OCI registry test runs Debian's docker-registry and oras (to push):
``$OSLO_OPA_REGISTRY`` and ``$OSLO_OPA_ORAS`` when both are set, otherwise
the ones ``tools/install-registry.sh`` installs (docker-registry with
apt-get, oras built with Go and cached); skipped, with the same exception,
when it cannot install them.
"""

import os
import pathlib
import subprocess

import pytest

from tests.functional.nginx import Nginx
from tests.functional.registry import Registry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL_OPA = REPO_ROOT / 'tools' / 'install-opa.sh'
INSTALL_NGINX = REPO_ROOT / 'tools' / 'install-nginx.sh'
INSTALL_REGISTRY = REPO_ROOT / 'tools' / 'install-registry.sh'
# Exit status of the install scripts when they cannot install here:
# install-opa.sh without Go, install-nginx.sh without apt-get (or root),
# install-registry.sh without either.
NO_INSTALL_EXIT = 3
# A build from an empty Go cache takes 1-3 minutes on 2 cores.
INSTALL_TIMEOUT = 30 * 60


def _require_opa():
    return os.environ.get('OSLO_OPA_REQUIRE_OPA') == '1'


def skip_unless_required(message: str) -> None:
    """Skip the test for a missing real part; fail it instead under
    ``OSLO_OPA_REQUIRE_OPA=1`` (CI), where every part must be there."""
    if _require_opa():
        pytest.fail(f'{message} (OSLO_OPA_REQUIRE_OPA=1)')
    pytest.skip(message)


def _explicit(*names: str) -> tuple[str, ...] | None:
    """The binaries the environment variables names point at, when all
    are set (each must be an executable file), else None."""
    paths = tuple(os.environ.get(n) for n in names)
    if not all(paths):
        return None
    for name, path in zip(names, paths, strict=True):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(f'{name}={path!r} is not an executable file')
    return tuple(os.path.abspath(p) for p in paths)


def _installed(
    script: pathlib.Path, count: int, missing: str
) -> tuple[str, ...]:
    """The count binaries script installs (or finds), from the last count
    lines it prints; missing: why the tests skip when it exits
    NO_INSTALL_EXIT (it cannot install them here)."""
    try:
        proc = subprocess.run(
            ['bash', str(script)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr or ''
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors='replace')
        pytest.fail(
            f'{script} did not finish in {INSTALL_TIMEOUT}s:\n{stderr}'
        )
    if proc.returncode == NO_INSTALL_EXIT:
        skip_unless_required(f'{missing}:\n{proc.stderr[-1000:]}')
    paths = [line.strip() for line in proc.stdout.strip().splitlines()]
    paths = paths[-count:]
    if (
        proc.returncode != 0
        or len(paths) != count
        or not all(os.path.isabs(p) and os.access(p, os.X_OK) for p in paths)
    ):
        pytest.fail(
            f'{script} failed (exit status {proc.returncode}, printed '
            f'{paths!r}):\n{proc.stderr[-2000:]}'
        )
    return tuple(paths)


@pytest.fixture(scope='session')
def opa_bin():
    """Absolute path of the OPA binary the functional tests run."""
    found = _explicit('OSLO_OPA_BIN') or _installed(
        INSTALL_OPA,
        1,
        'Go is not installed: the functional tests need the real OPA '
        'built by tools/install-opa.sh',
    )
    return found[0]


@pytest.fixture(scope='session')
def nginx_bin():
    """Absolute path of the nginx binary the bundle-server tests run."""
    found = _explicit('OSLO_OPA_NGINX') or _installed(
        INSTALL_NGINX,
        1,
        'nginx is not installed and cannot be (no apt-get, or not root): '
        'the bundle-polling tests need it as a bundle server',
    )
    return found[0]


@pytest.fixture
def nginx(nginx_bin, tmp_path):
    """nginx(root, server_extra='') -> a started nginx serving directory
    root on a loopback port (server_extra: more directives for its
    server block); every one started is stopped when the test ends."""
    started = []

    def start(root, server_extra=''):
        work = tmp_path / f'nginx-{len(started)}'
        server = Nginx(nginx_bin, str(work), str(root), server_extra)
        started.append(server)
        try:
            return server.start()
        except RuntimeError as e:
            pytest.fail(str(e))

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope='session')
def registry_bins():
    """(docker-registry, oras): absolute paths of the binaries the OCI
    registry test runs."""
    explicit = _explicit('OSLO_OPA_REGISTRY', 'OSLO_OPA_ORAS')
    if explicit:
        return explicit
    oras, registry = _installed(
        INSTALL_REGISTRY,
        2,
        'docker-registry or oras is not installed and cannot be (no '
        'apt-get or not root, or no Go): the OCI registry test needs them',
    )
    return registry, oras


@pytest.fixture
def oci_registry(registry_bins, tmp_path):
    """A started docker-registry on a loopback port (storage in tmp_path,
    plain HTTP, no authentication), with oras to push to it; stopped
    when the test ends."""
    binary, oras = registry_bins
    server = Registry(binary, oras, str(tmp_path / 'registry'))
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


def run_opa(
    opa_bin: str, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the opa binary with args, capturing its output (no check)."""
    return subprocess.run(
        [opa_bin, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
