"""Small policies, converted for a test."""

from __future__ import annotations

import os

from oslo_opa.convert import convert

# A rule others read, a rule with a target check.
THINGS = """
admin: role:admin
get_thing: rule:admin or project_id:%(project_id)s
delete_thing: rule:admin
"""


def converted(directory: str, text: str, tests: bool = False) -> str:
    """text (a policy.yaml) converted into directory/opa (prefix p)."""
    source = os.path.join(directory, 'p.yaml')
    with open(source, 'w') as f:
        f.write(text)
    out = os.path.join(directory, 'opa')
    convert(out, policy_files=[source], tests=tests)
    return out
