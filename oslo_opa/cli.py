"""The ``oslo-opa`` command: parse arguments, call the library, report.

Exit codes: 0 success; 1 a decision or check failed (``decide`` with a
denied request under ``--fail-on-deny``, ``convert --strict`` with
warnings); 2 bad usage or bad input (unknown option, unreadable or
malformed file, a rule that cannot be converted).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from oslo_opa.errors import OsloOpaError, StrictModeError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message}\n')


def _convert(args: argparse.Namespace) -> int:
    from oslo_opa import convert as convert_mod

    if not (args.policy_file or args.namespace or args.config_file):
        raise _UsageError(
            'convert needs --policy-file, --namespace or --config-file'
        )
    try:
        conv = convert_mod.convert(
            output_dir=args.output_dir,
            policy_files=args.policy_file or (),
            namespaces=args.namespace or (),
            config_file=args.config_file,
            package_prefix=args.package_prefix,
            enforce_new_defaults=args.enforce_new_defaults,
            strict=args.strict,
        )
    except StrictModeError as e:
        for warning in e.warnings:
            print(f'oslo-opa: error: {warning}', file=sys.stderr)
        return EXIT_FAILED
    for warning in conv.warnings:
        print(f'oslo-opa: warning: {warning}', file=sys.stderr)
    print(
        f'converted {len(conv.rules)} rules to {args.output_dir} '
        f'(packages under data.{conv.prefix})'
    )
    return EXIT_OK


def _load_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.requests:
        try:
            with open(args.requests, encoding='utf-8') as f:
                doc = json.load(f)
        except OSError as e:
            raise _UsageError(f'{args.requests}: cannot read: {e}') from e
        except ValueError as e:
            raise _UsageError(f'{args.requests}: not valid JSON: {e}') from e
        if not isinstance(doc, list):
            raise _UsageError(f'{args.requests}: expected a JSON list')
        return doc
    if not args.rule:
        raise _UsageError('decide needs --rule or --requests')
    requests = []
    for rule in args.rule:
        try:
            creds = json.loads(args.creds)
            target = json.loads(args.target)
        except ValueError as e:
            raise _UsageError(f'--creds/--target: not valid JSON: {e}') from e
        requests.append({'rule': rule, 'creds': creds, 'target': target})
    return requests


def _decide(args: argparse.Namespace) -> int:
    from oslo_opa import engine, inputs

    policy = engine.RegoPolicy(args.directory)
    denied = 0
    for i, req in enumerate(_load_requests(args)):
        if not isinstance(req, dict) or not isinstance(req.get('rule'), str):
            raise _UsageError(f'request {i}: needs a "rule" string')
        rule = req['rule']
        entry = policy.manifest.rules.get(rule)
        if entry is None:
            print(f'DENY   {rule}: not in {args.directory}/manifest.json')
            denied += 1
            continue
        doc = inputs.build_input(
            req.get('creds') or {}, req.get('target') or {}, rule
        )
        state = policy.state(rule, doc)
        verdict = 'ALLOW' if state == 't' else 'DENY '
        denied += state != 't'
        reason = {
            't': 'the check string passes',
            'f': 'the check string fails',
            'e': 'oslo.policy would raise on this input, so it denies',
        }.get(state, 'no decision from the engine, so it denies')
        print(f'{verdict}  {rule}: {reason}')
        if args.verbose:
            print(f'       check string: {entry.check_str}')
    return EXIT_FAILED if denied and args.fail_on_deny else EXIT_OK


class _UsageError(OsloOpaError):
    pass


def build_parser() -> argparse.ArgumentParser:
    """The ``oslo-opa`` argument parser."""
    parser = _Parser(
        prog='oslo-opa',
        description='Convert oslo.policy rules to Rego and decide them.',
    )
    sub = parser.add_subparsers(dest='command', required=True)

    conv = sub.add_parser(
        'convert',
        help='convert policy rules into Rego v1 modules',
        description=(
            'Convert the rules an oslo.policy Enforcer would enforce '
            '(policy files on top of registered defaults) into Rego v1 '
            'modules, a manifest.json and a delegation policy.yaml.'
        ),
    )
    conv.add_argument(
        '--policy-file',
        action='append',
        metavar='FILE',
        help='YAML or JSON policy file; repeat it, later files override '
        'earlier ones',
    )
    conv.add_argument(
        '--namespace',
        action='append',
        metavar='NS',
        help='oslo.policy.policies entry point whose registered defaults '
        'are converted; repeatable',
    )
    conv.add_argument(
        '--config-file',
        metavar='FILE',
        help='a service config file: its [oslo_policy] options apply',
    )
    conv.add_argument(
        '--output-dir',
        '-o',
        required=True,
        metavar='DIR',
        help='directory to (re)create with the converted policy',
    )
    conv.add_argument(
        '--package-prefix',
        metavar='PREFIX',
        help='Rego package prefix (default: from the namespace or file)',
    )
    conv.add_argument(
        '--enforce-new-defaults',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='override [oslo_policy] enforce_new_defaults',
    )
    conv.add_argument(
        '--strict',
        action='store_true',
        help='treat every warning as an error (exit 1)',
    )
    conv.set_defaults(func=_convert)

    dec = sub.add_parser(
        'decide',
        help='decide requests with a converted policy (embedded engine)',
        description=(
            'Decide requests in this process with the embedded Rego '
            'engine and print ALLOW or DENY with the reason.'
        ),
    )
    dec.add_argument('directory', help='output of oslo-opa convert')
    dec.add_argument('--rule', action='append', help='rule to decide')
    dec.add_argument('--creds', default='{}', help='credentials as JSON')
    dec.add_argument('--target', default='{}', help='target as JSON')
    dec.add_argument(
        '--requests',
        metavar='FILE',
        help='JSON list of {"rule", "creds", "target"} objects',
    )
    dec.add_argument(
        '--fail-on-deny',
        action='store_true',
        help='exit 1 when any request is denied',
    )
    dec.add_argument('--verbose', '-v', action='store_true')
    dec.set_defaults(func=_decide)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oslo-opa``."""
    logging.basicConfig(level=logging.ERROR, format='%(name)s: %(message)s')
    # oslo.policy logs parse failures itself; convert reports them by rule.
    logging.getLogger('oslo_policy').setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OsloOpaError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_USAGE


if __name__ == '__main__':
    sys.exit(main())
