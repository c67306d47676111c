"""The shared corpus (tests/fixtures/corpus) as oslo.policy objects.

The functions named after services return the RuleDefault objects the
service registers; ``corpus_entry_points`` exposes them under test-only
``oslo.policy.policies`` entry points, as an installed service would.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

from oslo_policy import policy as oslo_policy

CORPUS = os.path.join(os.path.dirname(__file__), 'fixtures', 'corpus')
SERVICES = sorted(
    name.split('.')[0]
    for name in os.listdir(CORPUS)
    if name.endswith('.policy.yaml')
)


def document(service: str) -> dict:
    with open(os.path.join(CORPUS, f'{service}.json'), encoding='utf-8') as f:
        return json.load(f)


def namespace(service: str) -> str:
    return document(service)['namespace']


def policy_file(service: str, kind: str = 'policy.yaml') -> str:
    return os.path.join(CORPUS, f'{service}.{kind}')


def defaults(service: str) -> list[oslo_policy.RuleDefault]:
    """The service's registered defaults, deprecations included."""
    out = []
    for r in document(service)['rules']:
        dep = r.get('deprecated_rule')
        deprecated = None
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if dep:
                deprecated = oslo_policy.DeprecatedRule(
                    name=dep['name'],
                    check_str=dep['check_str'],
                    deprecated_reason=dep.get('deprecated_reason')
                    or r.get('deprecated_reason')
                    or 'corpus',
                    deprecated_since=dep.get('deprecated_since')
                    or r.get('deprecated_since')
                    or 'corpus',
                )
            out.append(
                oslo_policy.RuleDefault(
                    name=r['name'],
                    check_str=r['check_str'],
                    description=r.get('description'),
                    deprecated_rule=deprecated,
                    deprecated_for_removal=bool(
                        r.get('deprecated_for_removal')
                    ),
                    deprecated_reason=r.get('deprecated_reason'),
                    deprecated_since=r.get('deprecated_since'),
                    scope_types=r.get('scope_types'),
                )
            )
    return out


def _make(service: str):
    def list_rules() -> list[oslo_policy.RuleDefault]:
        return defaults(service)

    list_rules.__name__ = service
    return list_rules


for _service in SERVICES:
    setattr(sys.modules[__name__], _service, _make(_service))


def write_entry_points(directory: str) -> str:
    """A dist-info under directory that registers every service's
    defaults as ``oslo.policy.policies`` entry points; returns it."""
    dist = os.path.join(directory, 'oslo_opa_test_corpus-0.0.dist-info')
    os.makedirs(dist, exist_ok=True)
    with open(os.path.join(dist, 'METADATA'), 'w') as f:
        f.write(
            'Metadata-Version: 2.1\nName: oslo-opa-test-corpus\nVersion: 0.0\n'
        )
    lines = ['[oslo.policy.policies]']
    for service in SERVICES:
        lines.append(f'{namespace(service)} = tests.corpus:{service}')
    with open(os.path.join(dist, 'entry_points.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return directory
