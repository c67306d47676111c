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

"""An OCI registry (Debian's ``docker-registry``, the CNCF distribution
registry) as a bundle server: its own process and configuration, storage
in a test's directory, plain HTTP on a loopback port, no authentication;
and ``oras`` to push bundles into it as OPA expects them (one
``application/vnd.oci.image.layer.v1.tar+gzip`` layer, an empty
``application/vnd.oci.image.config.v1+json`` config).
"""

from __future__ import annotations

import os
import re
import subprocess

from tests.processes import free_port, start_listening, stop_process

# The media types OPA's OCI downloader takes (OPA's docs, "OCI Registry";
# v1/download/oci_download.go picks the layer by this type alone).
LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip'
CONFIG_TYPE = 'application/vnd.oci.image.config.v1+json'

_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {work}/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: oslo-opa-functional-test
"""
# The access log (combined format): "GET /v2/... HTTP/1.1" 200.
_REQUEST = re.compile(
    r'"(GET|HEAD|PUT|POST|PATCH) (/v2/\S*) HTTP/[0-9.]+" (\d+)'
)


class Registry:
    """``docker-registry serve`` on 127.0.0.1:port until stop()."""

    def __init__(self, binary: str, oras: str, workdir: str) -> None:
        self.binary, self.oras = binary, oras
        self.work = os.path.abspath(workdir)
        self.port = free_port()
        self.host = f'127.0.0.1:{self.port}'
        self.url = f'http://{self.host}'
        self.proc: subprocess.Popen | None = None
        os.makedirs(self.work, exist_ok=True)
        self.config = os.path.join(self.work, 'registry.yml')
        with open(self.config, 'w') as f:
            f.write(_CONFIG.format(work=self.work, port=self.port))
        self.output = os.path.join(self.work, 'registry.out')
        # oras's own config (no credentials: none are needed) in here,
        # never the user's ~/.docker.
        self.oras_config = os.path.join(self.work, 'oras-config.json')
        with open(self.oras_config, 'w') as f:
            f.write('{}')
        self.empty_config = os.path.join(self.work, 'config.json')
        with open(self.empty_config, 'w') as f:
            f.write('{}')

    def start(self) -> Registry:
        self.proc = start_listening(
            [self.binary, 'serve', self.config],
            self.port,
            self.output,
            'registry',
            self.errors,
            cwd=self.work,
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def reference(self, repository: str, tag: str) -> str:
        return f'{self.host}/{repository}:{tag}'

    def _oras(self, *args: str, cwd: str | None = None) -> str:
        proc = subprocess.run(
            [
                self.oras,
                *args,
                '--plain-http',
                '--registry-config',
                self.oras_config,
            ],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f'oras {" ".join(args)} failed ({proc.returncode}):\n'
                f'{proc.stdout}{proc.stderr}'
            )
        return proc.stdout

    def push(self, bundle: str, repository: str, *tags: str) -> str:
        """Push the bundle tarball as an image tagged with every tag, as
        OPA's docs push one; the manifest's digest."""
        # oras names the layer by the file's path as given: push from the
        # bundle's directory so the name is just its file name.
        directory, name = os.path.split(os.path.abspath(bundle))
        out = self._oras(
            'push',
            '--config',
            f'{self.empty_config}:{CONFIG_TYPE}',
            self.reference(repository, ','.join(tags)),
            f'{name}:{LAYER_TYPE}',
            cwd=directory,
        )
        m = re.search(r'^Digest: (sha256:[0-9a-f]{64})$', out, re.M)
        if not m:
            raise RuntimeError(f'oras push printed no digest:\n{out}')
        return m[1]

    def tag(self, repository: str, source_tag: str, *tags: str) -> None:
        """Point tags at the image source_tag names (a rollback: no
        upload, the registry already has the image)."""
        self._oras('tag', self.reference(repository, source_tag), *tags)

    def errors(self) -> str:
        if not os.path.exists(self.output):
            return ''
        with open(self.output, errors='replace') as f:
            return f.read()[-2000:]

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every registry API request served."""
        out = []
        if os.path.exists(self.output):
            with open(self.output, errors='replace') as f:
                for line in f:
                    m = _REQUEST.search(line)
                    if m:
                        out.append((m[1], m[2], int(m[3])))
        return out
