"""Loading modules and data, as ``opa test PATH...`` does.

Every ``.rego`` file under the paths (recursively) is a module; every
``.json``, ``.yaml`` and ``.yml`` file is data, placed under the names of
the directories between the path given and the file (a file named
directly is data at the root); other files in directories are ignored.
"""

from __future__ import annotations

import json
import os
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


def _walk(
    path: str, keys: list[str], found: list[tuple[str, list[str]]], depth: int
) -> None:
    """Like OPA's loader: directories below the path given nest data."""
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
        child = os.path.normpath(os.path.join(path, name))
        if os.path.isdir(child) or name.endswith(('.rego', *DATA_EXTENSIONS)):
            _walk(child, keys, found, depth + 1)
        elif name.endswith('.tar.gz'):
            raise RegoTestError(
                f'{child}: bundles are not supported; pass the bundle '
                'directory instead'
            )


def _load(paths: Sequence[str]) -> tuple[list[_Module], dict[str, Any]]:
    """The modules (in file order) and the data document under paths."""
    found: list[tuple[str, list[str]]] = []
    for path in paths:
        if not os.path.exists(path):
            raise RegoTestError(f'{path}: no such file or directory')
        # Named as given (opa test's locations), found below it cleaned.
        _walk(path, [], found, 0)
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
