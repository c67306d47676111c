"""One process running the embedded driver on a bundle server, for the
fleet test (``test_bundle_fleet.py``): a service's API worker, reduced
to the decision it makes and a loopback HTTP server to ask it.

    python embedded_worker.py PORT BUNDLE_URL KEY SCOPE CACHE_DIR

``GET /decide`` answers ``{"revision_before", "result",
"revision_after", "generation_before", "generation_after"}`` for the
fleet test's rule and input (a reader listing resource providers):
the bundle revision in force just before and just after the decision,
so an answer whose two agree was decided by that revision.  The
revision is read from the policy in force itself (its directory's
``.manifest``), not from the poller's bookkeeping, which is updated
just after the policy is put in force.  ``GET /status`` answers the
driver's ``bundle_status()``.  SIGTERM closes the driver (which
removes its status file) and exits.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import threading

from oslo_opa import decider

# The same rule and input as the fleet test's OPA checkers.
RULE = 'placement:resource_providers:list'
READER = {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'}

_revisions: dict[str, str] = {}


def in_force(driver) -> tuple[int, str | None]:
    """(generation, bundle revision) of the policy in force."""
    generation = driver.generation
    manifest = driver.manifest
    if manifest is None:
        return generation, None
    directory = manifest.directory
    if directory not in _revisions:
        with open(os.path.join(directory, '.manifest')) as f:
            _revisions[directory] = json.load(f)['revision']
    return generation, _revisions[directory]


def main(port: str, url: str, key: str, scope: str, cache_dir: str) -> None:
    made = decider.load(
        driver='embedded',
        bundle_url=url,
        bundle_verification_key=key,
        bundle_verification_scope=scope,
        bundle_polling_interval=1,
        bundle_cache_dir=cache_dir,
        cache_size=0,
    )
    driver = made.driver

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def do_GET(self):  # noqa: N802
            if self.path == '/decide':
                g0, r0 = in_force(driver)
                result = made.decide(RULE, {}, READER)
                g1, r1 = in_force(driver)
                doc = {
                    'revision_before': r0,
                    'result': result,
                    'revision_after': r1,
                    'generation_before': g0,
                    'generation_after': g1,
                }
            elif self.path == '/status':
                doc = driver.bundle_status()
            else:
                self.send_error(404)
                return
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', int(port)), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        made.close()


if __name__ == '__main__':
    main(*sys.argv[1:])
