"""``oslo-opa convert``, ``decide`` and ``verify``: the policy itself."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from oslo_opa.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_overlay_args,
    warn,
)
from oslo_opa.errors import StrictModeError


def overlays_of(args: argparse.Namespace, embedded: bool = True) -> Any:
    """The overlays named by --overlay, or None."""
    from oslo_opa import overlay

    return overlay.load(args.overlay, embedded) if args.overlay else None


def policy_of(args: argparse.Namespace) -> Any:
    """The RegoPolicy of args.directory with --overlay and --data."""
    from oslo_opa import engine
    from oslo_opa.policy_files import load_data

    policy = engine.RegoPolicy(
        args.directory,
        data=load_data(args.data, embedded=True),
        overlays=overlays_of(args),
        strict=args.strict,
    )
    policy.validate_overlays()
    warn(policy.warnings)
    return policy


def _convert(args: argparse.Namespace) -> int:
    from oslo_opa import convert as convert_mod
    from oslo_opa import overlay

    if not (args.policy_file or args.namespace or args.config_file):
        raise UsageError(
            'convert needs --policy-file, --namespace or --config-file'
        )
    overlays = overlays_of(args, embedded=False)
    try:
        conv = convert_mod.convert(
            output_dir=args.output_dir,
            policy_files=args.policy_file or (),
            namespaces=args.namespace or (),
            config_file=args.config_file,
            package_prefix=args.package_prefix,
            enforce_new_defaults=args.enforce_new_defaults,
            strict=args.strict,
            tests=not args.no_tests,
        )
    except StrictModeError as e:
        for warning in e.warnings:
            print(f'oslo-opa: error: {warning}', file=sys.stderr)
        return EXIT_FAILED
    warn(conv.warnings)
    for text in conv.deprecations:
        # oslo.policy's words, as it warns when it loads these rules.
        print(f'oslo-opa: oslo.policy warns: {text}', file=sys.stderr)
    if overlays is not None:
        # convert never touches the overlays; it checks them against the
        # rules it wrote, so that a renamed or removed rule is noticed.
        try:
            warn(overlays.check(conv.rules, conv.prefix, args.strict))
        except StrictModeError as e:
            for warning in e.warnings:
                print(f'oslo-opa: error: {warning}', file=sys.stderr)
            return EXIT_FAILED
        except overlay.OverlayError as e:
            print(f'oslo-opa: error: {e}', file=sys.stderr)
            return EXIT_FAILED
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
            raise UsageError(f'{args.requests}: cannot read: {e}') from e
        except ValueError as e:
            raise UsageError(f'{args.requests}: not valid JSON: {e}') from e
        if not isinstance(doc, list):
            raise UsageError(f'{args.requests}: expected a JSON list')
        return doc
    if not args.rule:
        raise UsageError('decide needs --rule or --requests')
    try:
        creds = json.loads(args.creds)
        target = json.loads(args.target)
    except ValueError as e:
        raise UsageError(f'--creds/--target: not valid JSON: {e}') from e
    return [{'rule': r, 'creds': creds, 'target': target} for r in args.rule]


_STATE_REASONS = {
    't': 'the check string passes',
    'f': 'the check string fails',
    'e': 'oslo.policy would raise on this input, so it denies',
}


def _reason(rule: str, allowed: bool, state: Any, found: dict) -> str:
    """Why rule was decided so: the overlay that decided, else the check
    string's outcome (with the overlays on the rules it reads)."""
    for kind, verb in (('deny', 'denies'), ('grant', 'grants')):
        own = [k for k in (rule, '*') if k in found[kind]]
        if own:
            return f'an overlay {verb} it: ' + '; '.join(
                f'{r} ({kind}["*"]: every rule)' if k == '*' else r
                for k in own
                for r in found[kind][k]
            )
    text = _STATE_REASONS.get(state, 'no decision from the engine')
    if state in _STATE_REASONS and allowed != (state == 't'):
        # A hand edit of allow (or of a rule it reads) decides.
        text = f'its edited Rego decides so ({text})'
    read = [
        f'{kind}[{k!r}]: {"; ".join(v)}'
        for kind in ('deny', 'grant')
        for k, v in found[kind].items()
    ]
    if read:
        text += ', overlays on the rules it reads: ' + ', '.join(read)
    return text


def _decide(args: argparse.Namespace) -> int:
    from oslo_opa import engine, inputs

    policy = policy_of(args)
    denied = 0
    for i, req in enumerate(_load_requests(args)):
        if not isinstance(req, dict) or not isinstance(req.get('rule'), str):
            raise UsageError(f'request {i}: needs a "rule" string')
        rule = req['rule']
        entry = policy.manifest.rules.get(rule)
        if entry is None:
            print(f'DENY   {rule}: not in {args.directory}/manifest.json')
            denied += 1
            continue
        creds = inputs.credentials_dict(req.get('creds') or {})
        target = req.get('target') or {}
        whole = inputs.document(creds, target, rule)
        try:
            doc = policy.input_for(rule, creds, target)
            allowed = policy.evaluate(rule, doc)
            found = policy.overlay_reasons(rule, whole)
        except engine.EvaluationError as e:
            print(f'DENY   {rule}: {e}, so it denies')
            denied += 1
            continue
        reason = _reason(rule, allowed, policy.state(rule, whole), found)
        denied += not allowed
        print(f'{"ALLOW" if allowed else "DENY "}  {rule}: {reason}')
        if args.verbose:
            print(f'       check string: {entry.check_str}')
    return EXIT_FAILED if denied and args.fail_on_deny else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from oslo_opa import overlay
    from oslo_opa import verify as verify_mod
    from oslo_opa.convert import load_rule_table
    from oslo_opa.policy_files import load_data

    if not (args.policy_file or args.namespace or args.config_file):
        raise UsageError(
            'verify needs --policy-file, --namespace or --config-file'
        )
    table = load_rule_table(
        policy_files=args.policy_file or (),
        namespaces=args.namespace or (),
        config_file=args.config_file,
        enforce_new_defaults=args.enforce_new_defaults,
    )
    opa = explain = vocabulary = None
    if args.opa_url:
        opa = verify_mod.OpaDecider(
            args.directory, args.opa_url, overlay_path=args.overlay
        )
        decide, available = opa, opa.rules
        overlays = overlays_of(args, embedded=False)
        if overlays and opa.driver.manifest is not None:
            prefix = opa.driver.manifest.package_prefix
            warn(overlays.check(table.rules, prefix, args.strict))
            explain = opa.explain
    else:
        policy = policy_of(args)
        decide, available = verify_mod.rego_decider(args.directory, policy)
        overlays = policy.overlays
        if overlays:
            explain = verify_mod.rego_explainer(policy)
    tried: list[tuple[dict, dict]] = []
    if overlays:
        vocabulary = verify_mod.vocabulary(overlays, load_data(args.data))
        for doc in overlay.test_inputs(args.overlay):
            creds, target = doc.get('credentials'), doc.get('target')
            if isinstance(creds, dict) and isinstance(target, dict):
                tried.append((creds, target))
    try:
        report = verify_mod.verify(
            table,
            decide,
            available,
            per_rule=args.inputs,
            seed=args.seed,
            explain=explain,
            vocabulary=vocabulary,
            tried=tried,
        )
    finally:
        if opa is not None:
            opa.close()
    if opa is not None and opa.unanswered and not opa.answered:
        # Every "difference" would only say that OPA did not answer.
        print(
            f'oslo-opa: error: OPA at {args.opa_url} gave no decision '
            f'({opa.last_error})',
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.format == 'json':
        print(json.dumps(_report_json(report), indent=2, sort_keys=True))
    else:
        _print_report(report)
    return EXIT_FAILED if report.differences else EXIT_OK


def _report_json(report: Any) -> dict[str, Any]:
    return {
        'rules': report.rules,
        'decisions': report.decisions,
        'differences': [d.as_dict() for d in report.differences],
        'changes': [c.as_dict() for c in report.changes],
    }


def _both(d: Any) -> str:
    return (
        f'oslo.policy {"allows" if d.oslo_policy else "denies"}, the Rego '
        f'{"allows" if d.rego else "denies"}\n'
        f'         creds={json.dumps(d.creds, sort_keys=True)}\n'
        f'         target={json.dumps(d.target, sort_keys=True)}'
    )


def _print_report(report: Any) -> None:
    for c in report.changes:
        print(
            f'CHANGED  {c.kind}[{json.dumps(c.key)}] {json.dumps(c.reason)}: '
            f'{c.decisions} decision(s) of {len(c.rules)} rule(s), '
            f'e.g. {c.example.rule}: {_both(c.example)}'
        )
    for d in report.differences:
        if d.creds is None:
            print(f'DIFFERS  {d.rule}: {d.reason}')
            continue
        print(f'DIFFERS  {d.rule}: {_both(d)}')
    changed = sum(c.decisions for c in report.changes)
    print(
        f'{report.rules} rules, {report.decisions} decisions compared, '
        f'{len(report.differences)} rules differ'
        + (
            f'; {changed} decision(s) changed by {len(report.changes)} '
            f'overlay reason(s)'
            if report.changes
            else ''
        )
    )


def add_commands(sub: Any) -> None:
    """The convert, decide and verify subcommands."""
    conv = sub.add_parser(
        'convert',
        help='convert policy rules into Rego v1 modules',
        description=(
            'Convert the rules an oslo.policy Enforcer would enforce '
            '(policy files on top of registered defaults) into Rego v1 '
            'modules, a manifest.json, a delegation policy.yaml and, for '
            'each rule, a _test.rego of generated opa test cases.  With '
            '--overlay, check your overlays against the new rules (they '
            'are never written or deleted).'
        ),
    )
    policy_inputs(conv)
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
        '--no-tests',
        action='store_true',
        help="do not write each rule's generated <rule>_test.rego",
    )
    add_overlay_args(
        conv,
        data=False,
        strict='treat every warning as an error (exit 1), an overlay '
        'naming a rule the new conversion does not have included',
    )
    conv.set_defaults(func=_convert)

    dec = sub.add_parser(
        'decide',
        help='decide requests with a converted policy (embedded engine)',
        description=(
            'Decide requests in this process with the embedded Rego '
            'engine and print ALLOW or DENY with the reason: the overlay '
            "that denied or granted, or the check string's outcome."
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
    dec.add_argument(
        '--verbose', '-v', action='store_true', help='print check strings'
    )
    add_overlay_args(dec)
    dec.set_defaults(func=_decide)

    ver = sub.add_parser(
        'verify',
        help='compare oslo.policy with a converted (or edited) directory',
        description=(
            'Generate inputs for every rule the original policy defines '
            'and report each rule whose decision differs between '
            'oslo.policy and the Rego in DIRECTORY, with a minimal example '
            'input.  With --overlay, the decisions the overlays change are '
            'reported apart, by overlay reason, with an example each (the '
            "inputs of the overlays' own _test.rego files are tried on "
            'every rule, with inputs drawn from what they compare).  '
            'Exit 1 when any rule differs for another reason.'
        ),
    )
    ver.add_argument('directory', help='output of oslo-opa convert')
    policy_inputs(ver)
    ver.add_argument(
        '--inputs',
        type=int,
        default=100,
        metavar='N',
        help='generated inputs per rule (default 100)',
    )
    ver.add_argument('--seed', default='0', help='input generator seed')
    ver.add_argument(
        '--opa-url',
        metavar='URL',
        help=(
            'decide with the OPA running at URL (http://host:port, '
            'https://..., unix:///path/to/socket) instead of the Rego in '
            'DIRECTORY, whose manifest maps rules to OPA paths'
        ),
    )
    ver.add_argument('--format', choices=['text', 'json'], default='text')
    add_overlay_args(ver)
    ver.set_defaults(func=_verify)


def policy_inputs(
    parser: argparse.ArgumentParser, strict: bool = True
) -> None:
    """The options naming a service's policy, as convert takes them."""
    parser.add_argument(
        '--policy-file',
        action='append',
        metavar='FILE',
        help='YAML or JSON policy file; repeat it, later files override '
        'earlier ones',
    )
    parser.add_argument(
        '--namespace',
        action='append',
        metavar='NS',
        help='oslo.policy.policies entry point whose registered defaults '
        'are used; repeatable',
    )
    parser.add_argument(
        '--config-file',
        metavar='FILE',
        help='a service config file: its [oslo_policy] options apply',
    )
    parser.add_argument(
        '--enforce-new-defaults',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='override [oslo_policy] enforce_new_defaults',
    )
