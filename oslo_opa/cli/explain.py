"""``oslo-opa explain``: why a rule decides as it does on one request.

Exit codes: 0 the request is allowed, 3 it is denied (so that scripts
can branch on it), 2 bad usage or bad input (an unknown rule, JSON that
does not parse, a directory or an overlay that does not load).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from oslo_opa.cli.common import EXIT_OK, UsageError, add_overlay_args

EXIT_DENIED = 3


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f'{option}: not valid JSON: {e}') from e
    if not isinstance(value, dict):
        raise UsageError(f'{option}: expected a JSON object')
    return value


def _explain(args: argparse.Namespace) -> int:
    from oslo_opa import explain, inputs
    from oslo_opa.cli.policy import policy_of

    creds = _json_object(args.creds, '--creds')
    target = _json_object(args.target, '--target')
    policy = policy_of(args)
    if args.rule not in policy.manifest.rules:
        raise UsageError(
            f'rule {args.rule!r} is not in {args.directory}/manifest.json'
        )
    try:
        result = explain.explain(policy, args.rule, creds, target)
    except inputs.UnrepresentableInput as e:
        raise UsageError(f'--creds/--target: {e}') from e
    if args.mask:
        result = explain.mask(result)
    if args.format == 'json':
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(explain.render(result))
    return EXIT_OK if result['decision'] else EXIT_DENIED


def add_command(sub: Any) -> None:
    """The explain subcommand."""
    exp = sub.add_parser(
        'explain',
        help="explain a rule's decision, check by check",
        description=(
            'Decide RULE on one request with the embedded engine and print '
            "its check string as a tree: every node's outcome (PASS, FAIL, "
            'RAISE: oslo.policy would raise), what each check compared, '
            "the rules it reads through rule: and the overlays' reasons.  "
            "Every outcome is the converted Rego's own.  A hand-edited "
            'rule shows its decision alone.  Exit 0 when the request is '
            'allowed, 3 when it is denied, 2 on bad usage or input.'
        ),
    )
    exp.add_argument('directory', help='output of oslo-opa convert')
    exp.add_argument('rule', help='the rule to explain')
    exp.add_argument('--creds', default='{}', help='credentials as JSON')
    exp.add_argument('--target', default='{}', help='target as JSON')
    exp.add_argument(
        '--format',
        choices=['text', 'json'],
        default='text',
        help='json: one object, {"rule", "decision", "tree", "notes"}',
    )
    exp.add_argument(
        '--mask',
        action='store_true',
        help='print every credential value as "***"',
    )
    add_overlay_args(exp)
    exp.set_defaults(func=_explain)
