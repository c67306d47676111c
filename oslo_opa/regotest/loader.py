"""Loading modules and data, as ``opa test PATH...`` does.

Every ``.rego`` file under the paths (recursively) is a module; every
``.json``, ``.yaml`` and ``.yml`` file is data, placed under the names of
the directories between the path given and the file (a file named
directly is data at the root); other files in directories are ignored.
``--ignore`` patterns skip the files and directories below the paths
whose name matches, as ``opa test --ignore`` does (Go's filepath.Match
syntax; a path given is never skipped).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from oslo_opa.regotest.errors import RegoTestError
from oslo_opa.regotest.modules import _Module, _scan

DATA_EXTENSIONS = ('.json', '.yaml', '.yml')


class _YamlLoader(yaml.SafeLoader):
    """YAML as OPA reads it: dates stay strings."""


_YamlLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != 'tag:yaml.org,2002:timestamp']
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read(path: str) -> str:
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RegoTestError(f'{path}: cannot read: {e}') from e


def _load_data(path: str, text: str) -> Any:
    try:
        if path.endswith('.json'):
            return json.loads(text)
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (safe)
    except ValueError as e:
        raise RegoTestError(f'{path}: not valid JSON: {e}') from e
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f'{path}:{mark.line + 1}' if mark else path
        raise RegoTestError(f'{where}: not valid YAML') from e


def _merge(into: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Deep-merge doc into into; False on a conflict (OPA's merge)."""
    for key, value in doc.items():
        old = into.get(key)
        if key not in into:
            into[key] = value
        elif isinstance(old, dict) and isinstance(value, dict):
            if not _merge(old, value):
                return False
        else:
            return False
    return True


def _glob(pattern: str) -> re.Pattern[str] | None:
    """pattern as Go's filepath.Match reads it, as a regular expression;
    None when Go finds it malformed (OPA then ignores nothing with it)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == '[':
            found = _glob_class(pattern, i + 1)
            if found is None:
                return None
            regex, i = found
            out.append(regex)
            continue
        if c == '\\':
            i += 1
            if i == len(pattern):
                return None
            c = pattern[i]
        elif c in '*?':
            out.append('[^/]*' if c == '*' else '[^/]')
            i += 1
            continue
        out.append(re.escape(c))
        i += 1
    return re.compile(''.join(out), re.S)


def _glob_class(pattern: str, i: int) -> tuple[str, int] | None:
    """The character class opening before pattern[i], as a regular
    expression, and the index after it; None when malformed."""
    negated = pattern.startswith('^', i)
    if negated:
        i += 1
    ranges = []
    while not (ranges and pattern.startswith(']', i)):
        lo = _glob_char(pattern, i)
        if lo is None:
            return None
        lo_c, i = lo
        hi_c = lo_c
        if pattern[i] == '-':  # _glob_char saw a character after
            hi = _glob_char(pattern, i + 1)
            if hi is None:
                return None
            hi_c, i = hi
        ranges.append((lo_c, hi_c))
    # Go's lo-hi with lo > hi matches nothing; Python's is an error.
    parts = [
        f'{re.escape(lo)}-{re.escape(hi)}' for lo, hi in ranges if lo <= hi
    ]
    if not parts:
        return ('(?s:.)' if negated else '(?!)'), i + 1
    return f'[{"^" if negated else ""}{"".join(parts)}]', i + 1


def _glob_char(pattern: str, i: int) -> tuple[str, int] | None:
    """A character of a class at pattern[i], possibly escaped, and the
    index after it; None when malformed (Go's getEsc): a bare - or ],
    or the end of the pattern, the class unclosed."""
    if i >= len(pattern) or pattern[i] in '-]':
        return None
    if pattern[i] == '\\':
        i += 1
    if i + 1 >= len(pattern):
        return None
    return pattern[i], i + 1


def _ignored(name: str, ignore: Sequence[re.Pattern[str]]) -> bool:
    return any(rx.fullmatch(name) for rx in ignore)


def _walk(
    path: str,
    keys: list[str],
    found: list[tuple[str, list[str]]],
    depth: int,
    ignore: Sequence[re.Pattern[str]] = (),
) -> None:
    """Like OPA's loader: directories below the path given nest data,
    names matching an ignore pattern are skipped."""
    if not os.path.isdir(path):
        found.append((path, keys))
        return
    if len(keys) > 100:
        raise RegoTestError(f'{path}: directories nested too deep (a loop?)')
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise RegoTestError(f'{path}: cannot read: {e}') from e
    if depth > 0:
        keys = [*keys, os.path.basename(path)]
    for name in names:
        if _ignored(name, ignore):
            continue
        child = os.path.normpath(os.path.join(path, name))
        if os.path.isdir(child) or name.endswith(('.rego', *DATA_EXTENSIONS)):
            _walk(child, keys, found, depth + 1, ignore)
        elif name.endswith('.tar.gz'):
            raise RegoTestError(
                f'{child}: bundles are not supported; pass the bundle '
                'directory instead'
            )


def _load(
    paths: Sequence[str], ignore: Sequence[str] = ()
) -> tuple[list[_Module], dict[str, Any]]:
    """The modules (in file order) and the data document under paths,
    but for the names below them matching an ignore pattern."""
    globs = [rx for rx in map(_glob, ignore) if rx is not None]
    found: list[tuple[str, list[str]]] = []
    for path in paths:
        if not os.path.exists(path):
            raise RegoTestError(f'{path}: no such file or directory')
        # Named as given (opa test's locations), found below it cleaned.
        _walk(path, [], found, 0, globs)
    modules: dict[str, _Module] = {}
    data: dict[str, Any] = {}
    for path, keys in found:
        if os.path.normpath(path) in modules:
            continue
        text = _read(path)
        if path.endswith('.rego') or not path.endswith(DATA_EXTENSIONS):
            modules[os.path.normpath(path)] = _scan(path, text)
            continue
        doc = _load_data(path, text)
        for key in reversed(keys):
            doc = {key: doc}
        if not isinstance(doc, dict):
            raise RegoTestError(
                f'{path}: data at the root must be an object, not '
                f'{type(doc).__name__}'
            )
        if not _merge(data, doc):
            raise RegoTestError(
                f'{path}: merge error: a key is also '
                'defined by an earlier data file'
            )
    return list(modules.values()), data
