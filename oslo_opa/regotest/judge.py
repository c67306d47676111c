"""Judging a test by the worker's reply, as ``opa test`` does.

A test passes when it is defined and exactly ``true`` (any other value
fails, an evaluation error is an error); a test object passes when each
of its cases is ``true``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from oslo_opa.rego_errors import messages
from oslo_opa.regotest.modules import _Test
from oslo_opa.regotest.results import TestResult

# Makes a test's result from its fields: result(test, failed=True).
Result = Callable[..., TestResult]


def judge(
    test: _Test,
    reply: dict[str, Any],
    texts: dict[str, str],
    result: Result,
) -> TestResult:
    """test's result from the worker's reply to evaluating it.

    :param texts: the compiled modules' text by file name, for the
        locations in error messages.
    """
    judged = _outcome(test, reply, texts, result)
    judged.output = _output(reply)
    return judged


def _outcome(
    test: _Test,
    reply: dict[str, Any],
    texts: dict[str, str],
    result: Result,
) -> TestResult:
    ns = int(reply.get('ns') or 0)
    text = reply.get('text')
    if not reply.get('ok') or not isinstance(text, str):
        msgs = [
            m for raw in reply.get('errors', []) for m in messages(raw, texts)
        ]
        return result(
            test, error='; '.join(msgs) or 'regopy error', duration_ns=ns
        )
    if text == 'undefined':
        return result(test, failed=True, duration_ns=ns)
    try:
        value = json.loads(text)['expressions'][0]
    except (ValueError, KeyError, IndexError, TypeError):
        msgs = messages(text, texts)
        return result(
            test,
            error='; '.join(msgs) or f'unreadable result: {text[:200]}',
            duration_ns=ns,
        )
    if test.cases and isinstance(value, dict):
        failed, subs = _sub_results(value)
        return result(test, failed=failed, sub_results=subs, duration_ns=ns)
    return result(test, failed=value is not True, duration_ns=ns)


def _sub_results(value: Any) -> tuple[bool, dict[str, Any]]:
    """(failed, sub_results) of a test object, as OPA judges it: every
    leaf must be true."""
    if not isinstance(value, dict):
        return True, {}
    failed = False
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub: dict[str, Any] = {'name': key}
        if isinstance(item, dict):
            fail, subs = _sub_results(item)
            if subs:
                sub['sub_results'] = subs
        else:
            fail = item is not True
        if fail:
            sub['fail'] = True
            failed = True
        out[key] = sub
    return failed, out


def _output(reply: dict[str, Any]) -> bytes:
    """What the test's print() calls wrote (the worker sends base64)."""
    return base64.b64decode(reply.get('output') or '')
