"""Convert oslo.policy rules into Rego v1 (see ``oslo-opa convert``).

``rules`` builds the effective rule table, ``compile`` turns it into Rego
modules, ``naming`` names packages and delegation matches, ``testgen``
writes each rule's tests, ``emit`` writes the output directory.
"""

from __future__ import annotations

from collections.abc import Sequence

from oslo_opa.convert import emit, naming, testgen
from oslo_opa.convert.compile import Conversion, compile_table
from oslo_opa.convert.rules import RuleTable, load_rule_table
from oslo_opa.errors import StrictModeError

__all__ = [
    'Conversion',
    'RuleTable',
    'compile_table',
    'convert',
    'load_rule_table',
]


def convert(
    output_dir: str | None = None,
    policy_files: Sequence[str] = (),
    namespaces: Sequence[str] = (),
    config_file: str | None = None,
    package_prefix: str | None = None,
    enforce_new_defaults: bool | None = None,
    strict: bool = False,
    tests: bool = True,
) -> Conversion:
    """Convert a service's policy and, given output_dir, write it there.

    With tests, each rule also gets a ``_test.rego`` module (see
    :mod:`oslo_opa.convert.testgen`).

    :raises ConversionError: on bad input, naming the file, line or rule.
    :raises StrictModeError: with strict, when there were warnings.
    """
    table = load_rule_table(
        policy_files=policy_files,
        namespaces=namespaces,
        config_file=config_file,
        enforce_new_defaults=enforce_new_defaults,
    )
    prefix = package_prefix or naming.default_prefix(
        list(namespaces), list(policy_files)
    )
    conv = compile_table(table, prefix)
    if strict and conv.warnings:
        raise StrictModeError(conv.warnings)
    if output_dir is not None:
        test_files = (
            testgen.files(testgen.generate(table, conv)) if tests else None
        )
        emit.write(conv, output_dir, table.scope_types, test_files)
    return conv
