"""The hash OPA signs for each file of a bundle.

Rego modules and other files: the hash of their bytes.  Data and the
manifest (``data.json``, ``data.yaml``, ``data.yml`` and ``.manifest``,
by base name, in any directory: ``IsStructuredDoc`` in OPA's
``v1/bundle/bundle.go``) are hashed by value, not by bytes, so that
whitespace and key order do not matter: ``hash.go`` (``walk``) parses
them and hashes a canonical JSON text with object keys sorted, no
whitespace, numbers as written in the file and strings as Go's
``encoding/json`` writes them without HTML escaping.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from typing import Any

from oslo_opa.errors import BundleSignatureError

# hash.go (NewSignatureHasher): the names OPA gives its hash functions.
_HASHES: dict[str, Callable[[], Any]] = {
    'MD5': hashlib.md5,
    'SHA-1': hashlib.sha1,
    'SHA-224': hashlib.sha224,
    'SHA-256': hashlib.sha256,
    'SHA-384': hashlib.sha384,
    'SHA-512': hashlib.sha512,
    'SHA-512-224': lambda: hashlib.new('sha512_224'),
    'SHA-512-256': lambda: hashlib.new('sha512_256'),
}
_DATA_FILES = ('data.json', '.manifest')
_YAML_DATA_FILES = ('data.yaml', 'data.yml')
# Go's JSON decoder turns a lone UTF-16 surrogate escape into U+FFFD.
_SURROGATE = re.compile('[\ud800-\udfff]')


def is_signatures_file(name: str) -> bool:
    """bundle.go (IsSignaturesFile): by base name, in any directory."""
    return posixpath.basename(name) == '.signatures.json'


def is_structured(name: str) -> bool:
    """bundle.go (IsStructuredDoc): hashed by value, not by bytes."""
    base = posixpath.basename(name)
    return base in _DATA_FILES or base in _YAML_DATA_FILES


class _Number(str):
    """A JSON number as written: OPA decodes with UseNumber
    (util/json.go, NewJSONDecoder), so 1.0 and 1e0 hash differently."""


def _no_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON')


def _go_string(text: str) -> str:
    return _SURROGATE.sub('\ufffd', text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Last key wins, as in Go's map (and after surrogates are replaced).
    return {_go_string(k): v for k, v in pairs}


def _parse(name: str, content: bytes) -> Any:
    if posixpath.basename(name) in _YAML_DATA_FILES:
        # util.Unmarshal reads YAML through Go's YAML-to-JSON conversion,
        # whose number and boolean forms PyYAML does not share: refuse
        # rather than guess (opa build writes data.json, never YAML).
        raise BundleSignatureError(
            f'{name}: YAML data files in signed bundles are not supported '
            f'(use data.json)'
        )
    # util.Unmarshal: a UTF-8 byte order mark is dropped.
    if content.startswith(b'\xef\xbb\xbf'):
        content = content[3:]
    try:
        return json.loads(
            content.decode('utf-8'),
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_no_constant,
            object_pairs_hook=_object,
        )
    except ValueError as e:
        # OPA would try it as YAML (util.Unmarshal): see above.
        raise BundleSignatureError(f'{name}: not valid JSON: {e}') from e


def _encode(value: Any) -> bytes:
    """A JSON primitive as Go's json.Encoder writes it with
    SetEscapeHTML(false) (hash.go, primitiveEncoder)."""
    if isinstance(value, _Number):
        return value.encode('ascii')
    if isinstance(value, str):
        # Python escapes what Go escapes (", \\, controls, with \b \f
        # \n \r \t short) except U+2028 and U+2029, which Go escapes.
        text = json.dumps(_go_string(value), ensure_ascii=False)
        text = text.replace('\u2028', '\\u2028').replace('\u2029', '\\u2029')
        return text.encode('utf-8')
    return json.dumps(value).encode('ascii')  # true, false, null


def _walk(value: Any, update: Callable[[bytes], Any]) -> None:
    """hash.go (walk): objects with keys sorted, arrays in order,
    ``,`` and ``:`` without spaces."""
    if isinstance(value, dict):
        update(b'{')
        # Go sorts by bytes; for UTF-8 that is code point order.
        for i, key in enumerate(sorted(value)):
            if i:
                update(b',')
            update(_encode(key))
            update(b':')
            _walk(value[key], update)
        update(b'}')
    elif isinstance(value, list):
        update(b'[')
        for i, item in enumerate(value):
            if i:
                update(b',')
            _walk(item, update)
        update(b']')
    else:
        update(_encode(value))


def hash_file(name: str, content: bytes, algorithm: str = 'SHA-256') -> str:
    """The hex digest OPA signs for the bundle file name.

    :raises BundleSignatureError: an unknown algorithm, or a data file
        or manifest that cannot be read (named).
    """
    factory = _HASHES.get(algorithm)
    if factory is None:
        raise BundleSignatureError(
            f'{name}: unsupported hashing algorithm {algorithm!r}'
        )
    digest = factory()
    if is_structured(name):
        _walk(_parse(name, content), digest.update)
    else:
        digest.update(content)
    return digest.hexdigest()
