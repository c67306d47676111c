"""Shorter paths into regopy's C library for the per-decision calls.

Inputs: ``regopy.Input(doc)`` walks the document with a chain of ``isinstance``
checks against abstract base classes and one Python wrapper call per
value; on a decision's input that is most of the time spent outside the
engine (measured: about 17 us of a 40 us decision).  Input documents
here come from :mod:`oslo_opa.inputs`, so they hold only dicts with
string keys, lists, strings, booleans, ``None`` and 64-bit integers; this
module hands those to the same C entry points regopy uses, in the same
order, dispatching on the exact type.  Anything else, or a regopy build
without those entry points, takes ``regopy.Input``.

The result is a real ``regopy.Input``: it frees its handle as usual.

Results: ``query_bundle_entrypoint`` wraps the result in an ``Output``
that parses the engine's JSON text at once (and raises on some error
texts); a decision needs only the text, compared with ``true``/``false``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import regopy

try:
    from regopy import rego_shared as _shared

    _LIB = _shared.rego
    _NEW = _LIB.regoNewInput
    _FREE = _LIB.regoFreeInput
    _STR = _LIB.regoInputString
    _INT = _LIB.regoInputInt
    _BOOL = _LIB.regoInputBoolean
    _NULL = _LIB.regoInputNull
    _ITEM = _LIB.regoInputObjectItem
    _OBJECT = _LIB.regoInputObject
    _ARRAY = _LIB.regoInputArray
    _QUERY = _LIB.regoBundleQueryEntrypoint
    _OUT_OK = _LIB.regoOutputOk
    _OUT_SIZE = _LIB.regoOutputJSONSize
    _OUT_JSON = _LIB.regoOutputJSON
    _OUT_FREE = _LIB.regoFreeOutput
    _ERROR = _shared.rego_get_error
except (ImportError, AttributeError):  # another regopy: use its Input
    _LIB = None

_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1


class _Unsupported(Exception):
    """A value this builder leaves to regopy.Input."""


def _add(handle: Any, value: Any) -> None:
    kind = type(value)
    if kind is str:
        code = _STR(handle, value.encode('utf-8'))
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise _Unsupported
            if _STR(handle, key.encode('utf-8')):
                raise _Unsupported
            _add(handle, item)
            if _ITEM(handle):
                raise _Unsupported
        code = _OBJECT(handle, len(value))
    elif kind is list:
        for item in value:
            _add(handle, item)
        code = _ARRAY(handle, len(value))
    elif kind is bool:
        code = _BOOL(handle, value)
    elif value is None:
        code = _NULL(handle)
    elif kind is int and _MIN_INT <= value <= _MAX_INT:
        code = _INT(handle, value)
    else:
        raise _Unsupported
    if code:
        raise _Unsupported


def make_input(doc: Any) -> regopy.Input:
    """A ``regopy.Input`` equal to ``regopy.Input(doc)``."""
    if _LIB is None:
        return regopy.Input(doc)
    handle = _NEW()
    try:
        _add(handle, doc)
    except (_Unsupported, RecursionError):
        _FREE(handle)
        return regopy.Input(doc)
    made = regopy.Input.__new__(regopy.Input)
    made._impl = handle
    return made


def query(
    interpreter: regopy.Interpreter, bundle: regopy.Bundle, entrypoint: str
) -> tuple[bool, str]:
    """(ok, the result's text) of a bundle entrypoint query.

    The text is ``undefined`` for an undefined result; when ok is false
    it describes the error (and may quote input values).

    :raises regopy.RegoError: the engine refused the query.
    """
    if _LIB is None:
        try:
            out = interpreter.query_bundle_entrypoint(bundle, entrypoint)
            return out.ok(), str(out)
        except ValueError:  # regopy could not parse its own result
            return False, '<unparsable result>'
    handle = _QUERY(interpreter._impl, bundle._impl, entrypoint.encode())
    if not handle:
        raise regopy.RegoError(_ERROR(interpreter._impl))
    try:
        ok = bool(_OUT_OK(handle))
        size = _OUT_SIZE(handle)
        buf = ctypes.create_string_buffer(size)
        if _OUT_JSON(handle, buf, size):
            return False, '<unreadable result>'
        return ok, buf.value.decode('utf-8', 'replace')
    finally:
        _OUT_FREE(handle)
