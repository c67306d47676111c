"""The regopy worker process, and the handle that runs it.

regopy can crash (SIGSEGV, abort) or hang, so it runs in a worker
process (``_serve``): a worker that dies, runs past its timeout or grows
past ``WORKER_MEMORY`` raises ``_Died`` in the parent (``_Worker``), and
is started again for the next request.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

# Resident memory past which the worker is killed: regopy sometimes
# allocates without bound.  (An address-space limit would not do:
# regopy's allocator reserves far more than it uses.)
WORKER_MEMORY = 4 << 30
# How often a busy worker's memory is looked at, in seconds.
_POLL = 0.5
_TRUE = '{"expressions":[true]}'

_WORKER = 'from oslo_opa.regotest.worker import _serve; _serve()'


def _serve() -> None:
    """The worker: compile the modules once, evaluate entrypoints.

    One JSON line per request on stdin, one per reply on the original
    stdout.  rego-cpp writes Rego's print() output on fd 1: while a test
    is evaluated fd 1 is a capture file (the reply's ``output``), else
    it is stderr.  rego-cpp's log goes to fd 1 too, interleaved with
    print(), and cannot be told apart: every interpreter's log level is
    set to none (a query's governs what its evaluation logs).
    """
    proto = os.fdopen(os.dup(1), 'w', encoding='utf-8')
    os.dup2(2, 1)
    capture = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's life
    state: dict[str, Any] = {}
    for line in sys.stdin.buffer:
        for reply in _replies(state, json.loads(line), capture):
            proto.write(json.dumps(reply) + '\n')
            proto.flush()


def _replies(
    state: dict[str, Any], msg: dict[str, Any], capture: IO[bytes]
) -> Iterator[dict]:
    """load: one reply; run: one reply per test, as each is evaluated
    (no round trip per test), with its print() output."""
    if msg['op'] != 'run':
        yield _reply(functools.partial(_worker_load, state, msg))
        return
    for steps in msg['tests']:
        yield _captured(capture, functools.partial(_worker_eval, state, steps))


def _reply(job: Callable[[], dict]) -> dict:
    """job's reply, or the failure it raised as one."""
    try:
        return job()
    except Exception as e:  # noqa: BLE001 - every failure is a reply
        return {'ok': False, 'errors': [f'{type(e).__name__}: {e}']}


def _flush_c_stdio() -> None:
    """Write out what rego-cpp left in the C library's stdout buffer."""
    ctypes.CDLL(None).fflush(None)


def _captured(capture: IO[bytes], job: Callable[[], dict]) -> dict:
    """job's reply with what it wrote on fd 1 (base64, as opa test's
    JSON), in ``output`` when there is any."""
    sys.stdout.flush()
    os.dup2(capture.fileno(), 1)
    try:
        reply = _reply(job)
    finally:
        _flush_c_stdio()
        os.dup2(2, 1)
    # capture and fd 1 shared one offset: rewind for the next test.
    capture.seek(0)
    output = capture.read()
    capture.seek(0)
    capture.truncate()
    if output:
        reply['output'] = base64.b64encode(output).decode('ascii')
    return reply


def _worker_load(state: dict[str, Any], msg: dict[str, Any]) -> dict:
    import regopy
    from regopy import rego_shared as rs

    state.pop('bundle', None)
    it = regopy.Interpreter()
    # Its log (on stderr here) would hide a crash's last words.
    it.log_level = rs.LogLevel.NONE
    try:
        if msg['data']:
            # UTF-8, not \u escapes: regopy does not unescape strings.
            it.add_data_json(json.dumps(msg['data'], ensure_ascii=False))
        for name, text in msg['modules']:
            it.add_module(name, text)
        if msg['entries']:
            bundle = it.build(None, msg['entries'])
        else:
            bundle = it.build('x := true')
    except regopy.RegoError as e:
        return {'ok': False, 'errors': [str(e)]}
    if not bundle.ok():
        return {'ok': False, 'errors': [str(bundle.node())]}
    state['bundle'] = bundle
    return {'ok': True}


def _worker_eval(state: dict[str, Any], steps: list[list[Any]]) -> dict:
    """Evaluate entrypoints in order, each with its input, until one is
    not true: the last result is the test's."""
    import regopy
    from regopy import rego_shared as rs

    total = 0
    text = _TRUE
    for entry, term in steps:
        query = regopy.Interpreter()
        # Its log would be taken for the test's print() output.
        query.log_level = rs.LogLevel.NONE
        if term is not None:
            query.set_input_term(term)
        # The low-level calls: regopy's Output parses the result as JSON
        # eagerly, and raises on some (an error printed as text).
        t0 = time.perf_counter_ns()
        out = rs.rego_bundle_query_entrypoint(
            query._impl, state['bundle']._impl, entry
        )
        total += time.perf_counter_ns() - t0
        try:
            if not rs.rego_output_ok(out):
                node = regopy.Node(rs.rego_output_node(out))
                errors = [node.at(i).json() for i in range(len(node))]
                return {'ok': False, 'errors': errors, 'ns': total}
            text = rs.rego_output_string(out)
        finally:
            rs.rego_free_output(out)
        if text != _TRUE:
            break
    return {'ok': True, 'text': text, 'ns': total}


class _Died(Exception):
    """The worker crashed or was killed for running too long."""

    def __init__(
        self, what: str, detail: str = '', code: str = 'regopy_crash'
    ) -> None:
        super().__init__(what)
        self.what = what  # regopy crashed (signal 11, SIGSEGV)
        self.detail = detail  # its last words on stderr, if any
        self.code = code

    def message(self, doing: str) -> str:
        return f'{self.what} {doing}{self.detail}'


def _resident(pid: int) -> int:
    """Bytes of memory process pid holds (0 when unknown)."""
    try:
        with open(f'/proc/{pid}/statm', encoding='ascii') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0


class _Worker:
    """A worker process, started again whenever regopy kills it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: IO[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buf = b''

    def _start(self) -> tuple[subprocess.Popen[bytes], IO[bytes], int]:
        if self._proc is None or self._stdin is None or self._stdout is None:
            # The directory holding the oslo_opa package.
            here = os.path.abspath(__file__)
            root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
            env = dict(os.environ)
            env['PYTHONPATH'] = os.pathsep.join(
                p for p in (root, env.get('PYTHONPATH')) if p
            )
            # The worker's last words (an abort message) name the crash.
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
            self._buf = b''
            self._proc = subprocess.Popen(
                [sys.executable, '-c', _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
            self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
            if self._stdin is None or self._stdout is None:
                raise RuntimeError('no pipe to the regopy worker')
        return self._proc, self._stdin, self._stdout.fileno()

    def send(self, msg: dict[str, Any]) -> None:
        """Send a request (starting the worker if need be).

        :raises _Died: the worker is gone.
        """
        _, stdin, _ = self._start()
        try:
            stdin.write(json.dumps(msg).encode('utf-8') + b'\n')
            stdin.flush()
        except OSError:
            raise self._died() from None

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next reply.

        :raises _Died: the worker died, did not answer within timeout or
            used too much memory (it is stopped).
        """
        proc, _, fd = self._start()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b'\n' not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop(kill=True)
                    raise _Died(
                        f'timed out after {timeout:g} s',
                        code='eval_cancel_error',
                    )
                if not sel.select(min(left, _POLL)):
                    if _resident(proc.pid) > WORKER_MEMORY:
                        self.stop(kill=True)
                        raise _Died(
                            f'regopy used more than {WORKER_MEMORY >> 30} '
                            'GiB of memory'
                        )
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._died()
                self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return json.loads(line)

    def call(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request and its reply (see receive)."""
        self.send(msg)
        return self.receive(timeout)

    def _died(self) -> _Died:
        """Why the worker is gone (it is stopped)."""
        proc = self._proc
        status = None
        if proc is not None:
            try:
                status = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
        why = ''
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read().decode('utf-8', 'replace')
            last = [ln.strip() for ln in text.split('\n') if ln.strip()]
            why = f': {last[-1][:200]}' if last else ''
        self._close()
        if status is not None and status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = 'unknown'
            return _Died(f'regopy crashed (signal {-status}, {name})', why)
        return _Died(f'the regopy worker exited with status {status}', why)

    def _close(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc = self._stdin = self._stdout = self._stderr = None

    def stop(self, kill: bool = False) -> None:
        """End the worker: closing its input ends it, else (or with kill)
        SIGKILL."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                if kill or self._stdin is None:
                    raise OSError('kill')
                self._stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._close()
