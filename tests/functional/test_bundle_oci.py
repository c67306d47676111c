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

"""Signed bundles served from an OCI registry: Debian's docker-registry
(plain HTTP on a loopback port, storage in tmp, no authentication), the
bundles pushed with oras as OPA's docs push them, and one real ``opa run
--server -c <oslo-opa opa-config --service-type oci>`` following the
moving tag ``current``:

1. revision 1 pushed as ``r1`` and ``current``: OPA pulls it from the
   registry (its bundle etag is the layer's digest, the sha256 of the
   file ``oslo-opa bundle --signing-key`` wrote), verifies its signature
   (key id and scope) and decides by it;
2. revision 2 pushed as ``r2`` and ``current``: OPA switches to it
   within its polling window and decides by it;
3. a tampered revision 2 (a module changed after signing) pushed as
   ``current``: OPA refuses it (digest mismatch, in its log) and keeps
   deciding by revision 2, which proves the signature is checked on
   this path too;
4. ``oras tag ...:r1 current`` (a rollback: no upload): OPA is back on
   revision 1.
"""

from __future__ import annotations

import hashlib
import time

from oslo_opa import cli
from oslo_opa import manifest as manifest_mod
from tests.functional.fleet_helpers import (
    RULE,
    SERVICE,
    ask,
    bundle_state,
    revisions,
    wait_for,
)
from tests.functional.test_bundle_fleet import (  # noqa: F401 (fixture)
    KEY_ID,
    SCOPE,
    policies,
)
from tests.functional.test_opa_sidecar import Opa

MIN_DELAY, MAX_DELAY = 1, 2
REPOSITORY = f'policies/{SERVICE}'


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _etag(opa):
    return bundle_state(opa).get('etag')


def test_opa_follows_a_tag_in_an_oci_registry(
    opa_bin,
    oci_registry,
    tmp_path,
    policies,  # noqa: F811
):
    t_start = time.monotonic()
    rev1, rev2 = policies[1]['revision'], policies[2]['revision']
    path = manifest_mod.load(policies['directory']).rules[RULE].path
    registry = oci_registry

    # 1. Revision 1 as r1 and current, then OPA started on current.
    registry.push(policies[1]['path'], REPOSITORY, 'r1', 'current')
    config = str(tmp_path / 'opa.yaml')
    args = ['opa-config', '--service-url', registry.url]
    args += ['--service-type', 'oci']
    args += [
        '--bundle',
        f'{SERVICE}={registry.reference(REPOSITORY, "current")}',
    ]
    args += ['--min-delay-seconds', str(MIN_DELAY)]
    args += ['--max-delay-seconds', str(MAX_DELAY)]
    args += ['--verification-key', policies['public_key']]
    args += ['--key-id', KEY_ID, '--scope', SCOPE]
    args += ['--persistence-directory', str(tmp_path / 'persist')]
    assert cli.main([*args, '-o', config]) == 0
    opa = Opa(opa_bin, tmp_path, extra_args=['-c', config])
    started = time.monotonic()
    try:
        opa.start()
        wait_for(lambda: revisions([opa]) == [rev1], 15, 'revision 1')
        activated = time.monotonic() - started
        assert ask(opa, path) == (rev1, False)
        # Pulled from the registry: the bundle's etag is the digest of
        # the image's layer, the very file oslo-opa bundle signed.
        assert _etag(opa) == _sha256(policies[1]['path'])
        pulled = [
            p
            for m, p, code in registry.requests()
            if m == 'GET' and code == 200 and '/blobs/sha256:' in p
        ]
        assert any(p.endswith(_sha256(policies[1]['path'])) for p in pulled), (
            registry.requests()
        )

        # 2. Revision 2 as r2 and current: OPA moves with the tag.
        pushed = time.monotonic()
        registry.push(policies[2]['path'], REPOSITORY, 'r2', 'current')
        wait_for(lambda: revisions([opa]) == [rev2], 15, 'revision 2')
        switched = time.monotonic() - pushed
        assert ask(opa, path) == (rev2, True)
        assert _etag(opa) == _sha256(policies[2]['path'])

        # 3. A tampered revision 2 as current: refused, revision 2 kept.
        registry.push(policies['tampered'], REPOSITORY, 'current')
        wait_for(
            lambda: 'digest mismatch' in open(opa.log).read(),
            15,
            'OPA refusing the tampered bundle',
        )
        assert revisions([opa]) == [rev2]
        assert ask(opa, path) == (rev2, True)

        # 4. Rollback: current back on r1, nothing uploaded.
        rolled = time.monotonic()
        registry.tag(REPOSITORY, 'r1', 'current')
        wait_for(lambda: revisions([opa]) == [rev1], 15, 'rollback to r1')
        rolled_back = time.monotonic() - rolled
        assert ask(opa, path) == (rev1, False)
    finally:
        opa.stop()
    print(
        f'\nOCI registry: revision 1 activated {activated:.2f}s after '
        f'OPA started; switched to revision 2 {switched:.2f}s after the '
        f'push; rolled back {rolled_back:.2f}s after the retag '
        f'(polling {MIN_DELAY}-{MAX_DELAY}s); test '
        f'{time.monotonic() - t_start:.1f}s'
    )
