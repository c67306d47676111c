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

"""nginx as a bundle server: its own process, configuration, pid, logs
and temporary files in a test's directory, serving one directory on a
loopback port (static files get ETags, so OPA's polls are conditional).
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess

from tests.processes import free_port, start_listening, stop_process

_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format polls '$msec $remote_addr "$request" $status $body_bytes_sent';
    access_log {work}/access.log polls;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
        {server_extra}
    }}
}}
"""
# $msec "$request" $status: one access-log line.
_LINE = re.compile(r'^(\d+\.\d+) \S+ "(\S+) (\S+) [^"]*" (\d+) (\d+)$')


class Nginx:
    """``nginx`` serving root on 127.0.0.1:port until stop()."""

    def __init__(
        self, binary: str, workdir: str, root: str, server_extra: str = ''
    ) -> None:
        self.binary = binary
        self.work = os.path.abspath(workdir)
        self.root = os.path.abspath(root)
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.proc: subprocess.Popen | None = None
        os.makedirs(os.path.join(self.work, 'tmp'), exist_ok=True)
        # As root, nginx's workers would switch to "nobody", who cannot
        # read a test's private tmp directory: keep them as we are.
        user = ''
        if os.geteuid() == 0:
            user = f'user {pwd.getpwuid(0).pw_name};'
        self.config = os.path.join(self.work, 'nginx.conf')
        with open(self.config, 'w') as f:
            f.write(
                _CONFIG.format(
                    user=user,
                    work=self.work,
                    port=self.port,
                    root=self.root,
                    server_extra=server_extra,
                )
            )
        self.access_log = os.path.join(self.work, 'access.log')
        self.output = os.path.join(self.work, 'nginx.out')

    def start(self) -> Nginx:
        self.proc = start_listening(
            [self.binary, '-c', self.config, '-p', self.work + '/'],
            self.port,
            self.output,
            'nginx',
            self.errors,
        )
        return self

    def stop(self) -> None:
        # SIGQUIT would wait for keep-alive pollers; TERM is fast.
        stop_process(self.proc)
        self.proc = None

    def errors(self) -> str:
        text = ''
        for name in (self.output, os.path.join(self.work, 'error.log')):
            if os.path.exists(name):
                with open(name, errors='replace') as f:
                    text += f.read()[-2000:]
        return text

    def requests(self) -> list[tuple[float, str, str, int]]:
        """(time, method, path, status) of every request served."""
        out = []
        if not os.path.exists(self.access_log):
            return out
        with open(self.access_log) as f:
            for line in f:
                m = _LINE.match(line.strip())
                if m:
                    out.append((float(m[1]), m[2], m[3], int(m[4])))
        return out
