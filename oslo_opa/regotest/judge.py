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


def judge(
    test: _Test,
    reply: dict[str, Any],
    texts: dict[str, str],
    result: Callable[..., TestResult],
) -> TestResult:
    """test's result from the worker's reply to evaluating it.

    :param texts: the compiled modules' text by file name, for the
        locations in error messages.
    :param result: makes a result of test from its fields.
    """
    return result(test, output=_output(reply), **_fields(test, reply, texts))


def _fields(
    test: _Test, reply: dict[str, Any], texts: dict[str, str]
) -> dict[str, Any]:
    """The fields of test's result the reply gives, output aside."""
    ns = int(reply.get('ns') or 0)
    text = reply.get('text')
    if not reply.get('ok') or not isinstance(text, str):
        msgs = [
            m for raw in reply.get('errors', []) for m in messages(raw, texts)
        ]
        return {
            'error': '; '.join(msgs) or 'regopy error',
            'duration_ns': ns,
        }
    if text == 'undefined':
        return {'failed': True, 'duration_ns': ns}
    try:
        value = json.loads(text)['expressions'][0]
    except (ValueError, KeyError, IndexError, TypeError):
        msgs = messages(text, texts)
        return {
            'error': '; '.join(msgs) or f'unreadable result: {text[:200]}',
            'duration_ns': ns,
        }
    if test.cases and isinstance(value, dict):
        failed, subs = _sub_results(value)
        return {'failed': failed, 'sub_results': subs, 'duration_ns': ns}
    return {'failed': value is not True, 'duration_ns': ns}


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
