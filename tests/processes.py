"""Processes the tests run: a free loopback port, a server started and
waited for until it listens, stopped for sure."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

START_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_listening(
    cmd: list[str],
    port: int,
    output: str,
    what: str,
    errors: Callable[[], str],
    cwd: str | None = None,
) -> subprocess.Popen:
    """Start cmd (its output appended to output) and wait until it
    listens on 127.0.0.1:port; RuntimeError with errors() if it exits
    or does not listen in START_TIMEOUT seconds."""
    with open(output, 'ab') as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'{what} exited: {errors()}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f'{what} did not listen in {START_TIMEOUT}s')


def stop_process(proc: subprocess.Popen | None) -> None:
    """TERM proc, KILL it if it lingers."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
