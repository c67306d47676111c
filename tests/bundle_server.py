"""A real bundle server for tests: http.server in a thread.

It serves one bundle at ``/bundle.tar.gz`` with a strong ETag (its
SHA-256) and answers ``If-None-Match`` with 304, as nginx or S3 do.  It
can misbehave on demand (``mode``): ``500``, ``reset`` (the connection
closed without an answer), ``garbage`` (200 with bytes that are not a
bundle), ``slow`` (a byte every 50 ms), ``noetag`` (no ETag header).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time

PATH = '/bundle.tar.gz'


class BundleServer:
    def __init__(self, content: bytes = b'') -> None:
        self.content = content
        self.mode = 'ok'
        self.requests: list[tuple[str | None, int]] = []
        self._lock = threading.Lock()
        self._start()

    def _start(self, port: int = 0) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(
            ('127.0.0.1', port), Handler
        )
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f'http://127.0.0.1:{self.port}{PATH}'
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True
        )
        self._thread.start()

    @property
    def etag(self) -> str:
        return '"%s"' % hashlib.sha256(self.content).hexdigest()

    def publish(self, content: bytes) -> None:
        with self._lock:
            self.content = content

    def count(self, status: int) -> int:
        return sum(1 for _, s in self.requests if s == status)

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            content, mode, etag = self.content, self.mode, self.etag
        if h.path != PATH:
            return self._answer(h, 404, b'', None)
        asked = h.headers.get('If-None-Match')
        if mode == '500':
            return self._answer(h, 500, b'oops', None)
        if mode == 'reset':
            self.requests.append((asked, 0))
            h.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0'
            )
            h.close_connection = True
            h.connection.close()
            return None
        if mode == 'garbage':
            return self._answer(h, 200, b'\x1f\x8b not a tarball', '"g"')
        if mode != 'noetag' and asked == etag:
            return self._answer(h, 304, b'', etag)
        if mode == 'slow':
            self.requests.append((asked, 200))
            h.send_response(200)
            h.send_header('Content-Length', str(len(content)))
            h.end_headers()
            try:
                for i in range(len(content)):
                    h.wfile.write(content[i : i + 1])
                    h.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return None
        return self._answer(
            h, 200, content, None if mode == 'noetag' else etag
        )

    def _answer(self, h, status, body, etag) -> None:
        self.requests.append((h.headers.get('If-None-Match'), status))
        h.send_response(status)
        if etag:
            h.send_header('ETag', etag)
        h.send_header('Content-Type', 'application/gzip')
        h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)

    def stop(self) -> None:
        """Down: the port refuses connections."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def restart(self) -> None:
        self._start(self.port)
