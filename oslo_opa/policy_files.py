"""Reading what a policy directory holds: Rego modules and data documents.

Shared by the embedded engine, the bundle builder and the overlays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from typing import Any

import yaml

from oslo_opa.errors import PolicyLoadError


def read_modules(
    directory: str, tests: bool = False, skip: Collection[str] = ()
) -> dict[str, str]:
    """Every ``.rego`` file under directory: relpath -> text; with tests,
    the ``_test.rego`` files only, else all the others; none whose
    relpath is in skip.

    :raises PolicyLoadError: naming a file that cannot be read.
    """
    modules = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(files):
            if not name.endswith('.rego') or (
                name.endswith('_test.rego') is not tests
            ):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel in skip:
                continue
            try:
                with open(path, encoding='utf-8') as f:
                    modules[rel] = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise PolicyLoadError(f'{path}: cannot read: {e}') from e
    return modules


def _data_files(paths: Iterable[str]) -> list[str]:
    files = []
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if name.endswith(('.json', '.yaml', '.yml')):
                    files.append(os.path.join(path, name))
        else:
            files.append(path)
    return files


# What regopy 1.5.2 reads from a data document's JSON text keeps its
# escapes ("a\tb" is four characters there, not three), so such a data
# string would never equal the same text in the input, where a rule
# may compare them (a deny list would then fail open).
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _unescaped(value: Any, where: str) -> None:
    """Raise PolicyLoadError for a string regopy would read wrongly."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _ESCAPED.search(item):
                raise PolicyLoadError(
                    f'{at}: a string holding a quote, a backslash or a '
                    f'control character, which the embedded engine '
                    f'(regopy) would not read as written'
                )
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, at))
                stack.append((v, f'{at}.{k}'))
        elif isinstance(item, list):
            stack.extend((v, f'{at}[{i}]') for i, v in enumerate(item))


def load_data(paths: Iterable[str], embedded: bool = False) -> dict[str, Any]:
    """Merge the top-level objects of JSON/YAML files into one document.

    :param embedded: for the embedded engine: refuse strings it cannot
        carry (see ``_ESCAPED``).
    :raises PolicyLoadError: naming the file that cannot be read, is not
        an object, or defines a key another file defines.
    """
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in _data_files(paths):
        try:
            with open(path, encoding='utf-8') as f:
                doc = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyLoadError(f'{path}: cannot read data: {e}') from e
        except yaml.YAMLError as e:
            mark = getattr(e, 'problem_mark', None)
            where = f'{path}:{mark.line + 1}' if mark else path
            raise PolicyLoadError(f'{where}: not valid JSON or YAML') from e
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise PolicyLoadError(f'{path}: data must be an object')
        if embedded:
            _unescaped(doc, path)
        for key, value in doc.items():
            if key in data:
                raise PolicyLoadError(
                    f'{path}: data key {key!r} is also defined in '
                    f'{origin[key]}'
                )
            data[key] = value
            origin[key] = path
    return data
