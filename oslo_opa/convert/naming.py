"""Names: rule name to Rego package, and the delegation file's encoding.

Packages
    A rule's package is ``<prefix>.<slug>``.  The slug is the rule name
    with every character outside ``[A-Za-z0-9_]`` replaced by ``_``
    (``identity:get_project`` -> ``identity_get_project``), prefixed with
    ``r_`` when it would start with a digit or be empty (``r`` when it
    would start with ``_``), and suffixed with ``_`` when it is a Rego
    keyword or ends with ``_test`` (the name of a test module).  When two
    rule names of one conversion give the same slug, each of them gets
    ``_`` and the first 8 hex digits of the SHA-256 of its name appended.
    The mapping is deterministic for a given set of names;
    ``manifest.json`` maps every package back to its rule name.

Delegation matches
    oslo.policy splits check strings on whitespace and strips parentheses
    from the ends of words, so the delegation file cannot always say
    ``opa:<rule name>``.  The match is the rule name with ``%``, every
    whitespace character and ``(``/``)`` percent-encoded as UTF-8 bytes
    (``%25``, ``%20``, ``%28``, ``%29``, ...).  Names without those
    characters are written as they are; :func:`decode_match` reverses the
    encoding (``urllib.parse.unquote``).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse

from oslo_opa.errors import ConversionError

LIBRARY_PACKAGE = 'oslo_opa.lib'

# Rego v1 keywords and the names that cannot head a ref.
KEYWORDS = frozenset(
    [
        'as',
        'contains',
        'data',
        'default',
        'else',
        'every',
        'false',
        'if',
        'import',
        'in',
        'input',
        'not',
        'null',
        'package',
        'some',
        'true',
        'with',
    ]
)

_IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')
_UNSAFE = re.compile(r'[^A-Za-z0-9_]')
# What oslo.policy's tokenizer would split on or strip, plus '%' so that
# the encoding is reversible.
_NEEDS_ESCAPE = re.compile(r'[\s()%]')


def slug(name: str) -> str:
    """The readable Rego identifier for a rule name (may collide)."""
    s = _UNSAFE.sub('_', name)
    # A digit cannot start an identifier, and '_' alone is the wildcard
    # (regopy also rejects a package part that starts with '_').
    if not s or s[0].isdigit() or s[0] == '_':
        s = 'r' + s if s.startswith('_') else 'r_' + s
    # A module named <x>_test.rego is a test module to every Rego tool
    # (and to the engine, which skips it).
    if s in KEYWORDS or s.endswith('_test'):
        s += '_'
    return s


def validate_prefix(prefix: str) -> str:
    """Check a ``--package-prefix``: dotted Rego identifiers."""
    parts = prefix.split('.')
    for part in parts:
        if not _IDENT.match(part) or part in KEYWORDS:
            raise ConversionError(
                f'package prefix {prefix!r}: each dotted part must be a '
                f'Rego identifier that is not a keyword'
            )
    if parts[0] == LIBRARY_PACKAGE.split('.')[0]:
        raise ConversionError(
            f'package prefix {prefix!r}: {parts[0]!r} is reserved for '
            f'the helper library'
        )
    return prefix


def default_prefix(
    namespaces: list[str] | tuple[str, ...], policy_files: list[str]
) -> str:
    """Derive a prefix from the first namespace or policy file name.

    ``ironic.api`` -> ``ironic_api``; ``keystone.policy.yaml`` and
    ``/etc/keystone/policy.yaml`` -> ``keystone``.
    """
    import os

    if namespaces:
        base = namespaces[0]
    elif policy_files:
        path = os.path.abspath(policy_files[0])
        base = os.path.basename(path).split('.')[0]
        if base in ('policy', 'policies', ''):
            # /etc/keystone/policy.yaml: the service is the directory.
            base = os.path.basename(os.path.dirname(path)) or 'policy'
    else:
        base = 'policy'
    return slug(base.replace('.', '_')).lower() or 'policy'


def packages(names: list[str], prefix: str) -> dict[str, str]:
    """Map every rule name to a unique package under prefix."""
    validate_prefix(prefix)
    slugs = {name: slug(name) for name in names}
    seen: dict[str, list[str]] = {}
    for name, s in slugs.items():
        seen.setdefault(s, []).append(name)
    result = {}
    for name, s in slugs.items():
        if len(seen[s]) > 1:
            digest = hashlib.sha256(name.encode('utf-8', 'surrogatepass'))
            s = f'{s}_{digest.hexdigest()[:8]}'
        result[name] = f'{prefix}.{s}'
    inverse: dict[str, str] = {}
    for name, package in result.items():
        if package in inverse:
            other = inverse[package]
            raise ConversionError(
                f'rules {other!r} and {name!r} map to the same Rego '
                f'package {package!r}; rename one of them'
            )
        inverse[package] = name
    return result


def encode_match(name: str) -> str:
    """The delegation check's match for a rule name: ``opa:<match>``."""
    return _NEEDS_ESCAPE.sub(
        lambda m: urllib.parse.quote(m.group(0), safe=''), name
    )


def decode_match(match: str) -> str:
    """Reverse :func:`encode_match`."""
    return urllib.parse.unquote(match, errors='strict')
