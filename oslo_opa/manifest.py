"""Read and validate a converted directory's ``manifest.json``."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from oslo_opa.convert import naming
from oslo_opa.errors import PolicyLoadError

MANIFEST = 'manifest.json'


@dataclasses.dataclass(frozen=True)
class RuleEntry:
    """What the manifest says about one rule."""

    name: str
    query: str
    path: str
    module: str
    sha256: str | None
    check_str: str
    deps: tuple[str, ...]
    target_keys: tuple[str, ...]
    credentials: tuple[str, ...]
    ascii_lowering: bool
    scope_types: tuple[str, ...] | None
    package: str | None = None
    fast_module: str | None = None
    fast_sha256: str | None = None
    # The fast path's batch form (convert/batchpath.py); None in older
    # conversions.
    batch_module: str | None = None
    batch_sha256: str | None = None
    # Credentials read only through dotted paths (token.domain.id).
    dotted_credentials: tuple[str, ...] = ()
    # Those paths, as written (token.domain.id).
    dotted_paths: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A converted directory's manifest."""

    directory: str
    package_prefix: str
    default_rule: str | None
    library: tuple[str, ...]
    rules: dict[str, RuleEntry]
    # Its rules consult the overlays (converted by an oslo.opa that has
    # them).
    overlay_hooks: bool = False
    # Its fast paths walk credentials that are lists of scalars (see
    # input_profile.fast_profile); older conversions' compare them whole.
    fast_lists: bool = False
    # Its fast modules decide inputs whose roles make oslo.policy raise
    # (``_rr_decision``, see convert/fastpath.py).
    fast_raising_roles: bool = False
    # oslo.policy's deprecation warnings for the converted configuration.
    deprecations: tuple[str, ...] = ()
    # The library files' SHA-256 as written (empty: not recorded).
    library_sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    # Fast bundles compiled at conversion (see convert/prebuilt.py):
    # {"regopy": version, "fast": {"<digest>/<variant>": {"file",
    # "sha256"}}}.
    prebuilt: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The conversion's content revision (decision logs, metrics); empty
    # for conversions older than it.
    revision: str = ''

    def rule_for_match(self, match: str) -> RuleEntry | None:
        """The rule an ``opa:<match>`` check names, if any."""
        try:
            name = naming.decode_match(match)
        except UnicodeDecodeError:
            return None
        return self.rules.get(name)

    def closure(self, name: str) -> list[str]:
        """name and every rule it reads, each once, dependencies first."""
        order: list[str] = []
        seen: set[str] = set()
        stack = [(name, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                order.append(current)
                continue
            if current in seen:
                continue
            seen.add(current)
            stack.append((current, True))
            for dep in reversed(self.rules[current].deps):
                if dep not in seen:
                    stack.append((dep, False))
        return order


def load(directory: str) -> Manifest:
    """Read ``directory/manifest.json``.

    :raises PolicyLoadError: naming the file and what is wrong.
    """
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding='utf-8') as f:
            doc = json.load(f)
    except OSError as e:
        raise PolicyLoadError(f'{path}: cannot read: {e}') from e
    except ValueError as e:
        raise PolicyLoadError(f'{path}: not valid JSON: {e}') from e
    return parse(doc, directory)


def parse(doc: Any, directory: str) -> Manifest:
    """The Manifest of a manifest document, for directory.

    :raises PolicyLoadError: naming what is wrong.
    """
    path = os.path.join(directory, MANIFEST)
    try:
        rules = {}
        for name, entry in doc['rules'].items():
            rules[name] = RuleEntry(
                name=name,
                query=entry['query'],
                path=entry['path'],
                module=entry['module'],
                sha256=entry.get('sha256'),
                check_str=entry.get('check_str', ''),
                deps=tuple(entry.get('deps', ())),
                target_keys=tuple(entry.get('target_keys', ())),
                credentials=tuple(entry.get('credentials', ())),
                ascii_lowering=bool(entry.get('ascii_lowering', False)),
                scope_types=_opt_tuple(entry.get('scope_types')),
                package=entry.get('package'),
                fast_module=entry.get('fast_module'),
                fast_sha256=entry.get('fast_sha256'),
                batch_module=entry.get('batch_module'),
                batch_sha256=entry.get('batch_sha256'),
                dotted_credentials=tuple(entry.get('dotted_credentials', ())),
                dotted_paths=tuple(entry.get('dotted_paths', ())),
            )
        for entry in rules.values():
            for dep in entry.deps:
                if dep not in rules:
                    raise PolicyLoadError(
                        f'{path}: rule {entry.name!r} depends on '
                        f'{dep!r}, which the manifest does not list'
                    )
        return Manifest(
            directory=directory,
            package_prefix=doc['package_prefix'],
            default_rule=doc.get('default_rule'),
            library=tuple(doc.get('library', ())),
            rules=rules,
            overlay_hooks=doc.get('overlay_hooks') is True,
            fast_lists=doc.get('fast_lists') is True,
            fast_raising_roles=doc.get('fast_raising_roles') is True,
            deprecations=tuple(
                d for d in doc.get('deprecations') or () if isinstance(d, str)
            ),
            library_sha256=dict(doc.get('library_sha256') or {}),
            prebuilt=dict(doc.get('prebuilt') or {}),
            revision=str(doc.get('revision') or ''),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise PolicyLoadError(
            f'{path}: not an oslo-opa manifest (missing or bad {e})'
        ) from e


def _opt_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)
