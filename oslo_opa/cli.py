"""The ``oslo-opa`` command: parse arguments, call the library, report.

Exit codes: 0 success; 1 a decision or check failed (``decide`` with a
denied request under ``--fail-on-deny``, ``convert --strict`` with
warnings, ``push`` refused by OPA or unable to reach it, ``status``
finding OPA unhealthy, unreachable or missing a rule); 2 bad usage or bad
input (unknown option, unreadable or malformed file, a rule that cannot be
converted, a converted directory that does not compile).  ``test``
follows ``opa test``: 0 every test passed, 2 one did not, 1 the tests
cannot run.
"""

from __future__ import annotations

import argparse
import csv
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
            tests=not args.no_tests,
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


def _verify(args: argparse.Namespace) -> int:
    from oslo_opa import verify as verify_mod
    from oslo_opa.convert import load_rule_table

    if not (args.policy_file or args.namespace or args.config_file):
        raise _UsageError(
            'verify needs --policy-file, --namespace or --config-file'
        )
    table = load_rule_table(
        policy_files=args.policy_file or (),
        namespaces=args.namespace or (),
        config_file=args.config_file,
        enforce_new_defaults=args.enforce_new_defaults,
    )
    opa = None
    if args.opa_url:
        opa = verify_mod.OpaDecider(args.directory, args.opa_url)
        decide, available = opa, opa.rules
    else:
        decide, available = verify_mod.rego_decider(args.directory)
    try:
        report = verify_mod.verify(
            table, decide, available, per_rule=args.inputs, seed=args.seed
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
        print(
            json.dumps(
                {
                    'rules': report.rules,
                    'decisions': report.decisions,
                    'differences': [d.as_dict() for d in report.differences],
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        for d in report.differences:
            if d.creds is None:
                print(f'DIFFERS  {d.rule}: {d.reason}')
                continue
            print(
                f'DIFFERS  {d.rule}: oslo.policy '
                f'{"allows" if d.oslo_policy else "denies"}, the Rego '
                f'{"allows" if d.rego else "denies"}\n'
                f'         creds={json.dumps(d.creds, sort_keys=True)}\n'
                f'         target={json.dumps(d.target, sort_keys=True)}'
            )
        print(
            f'{report.rules} rules, {report.decisions} decisions compared, '
            f'{len(report.differences)} rules differ'
        )
    return EXIT_FAILED if report.differences else EXIT_OK


def _test(args: argparse.Namespace) -> int:
    from oslo_opa import regotest

    try:
        results = regotest.run(
            args.paths,
            run=args.run,
            timeout=args.timeout,
            ignore=args.ignore,
        )
    except regotest.RegoTestError as e:
        # opa test's status when the tests cannot run at all.
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    if args.format == 'json':
        sys.stdout.write(regotest.render_json(results))
    else:
        sys.stdout.write(regotest.render_text(results, args.verbose))
    if args.fail_on_empty and not results:
        print('oslo-opa: error: no tests were run', file=sys.stderr)
        return EXIT_FAILED
    return regotest.exit_code(results, args.exit_zero_on_skipped)


def _comma_list(value: str) -> list[str]:
    """A comma-separated (CSV) list, as opa's string-slice flags read
    theirs: --ignore 'a,b' is two patterns, '"a,b"' one."""
    return next(csv.reader([value]), [])


def _add_test_command(sub: Any) -> None:
    """The test subcommand: opa test, on the embedded engine."""
    tst = sub.add_parser(
        'test',
        help='run Rego test_ rules with the embedded engine (no OPA)',
        description=(
            'Run the test_ rules of the .rego files under the paths with '
            'the embedded engine, as opa test does: JSON and YAML files '
            'are data, todo_test_ rules are skipped.  Exit 0 when every '
            'test passes, 2 when one fails, errs or is skipped, 1 when '
            'the tests cannot run (no such path, Rego that does not '
            'compile).'
        ),
    )
    tst.add_argument(
        'paths', nargs='*', metavar='PATH', help='file or directory'
    )
    tst.add_argument(
        '--verbose',
        '-v',
        action='store_true',
        help='report every test (PASS too)',
    )
    tst.add_argument(
        '--format',
        '-f',
        choices=['text', 'pretty', 'json'],
        default='text',
        help='text (opa test\'s "pretty") or json',
    )
    tst.add_argument(
        '--run',
        '-r',
        metavar='REGEX',
        help='run only the tests whose full name (data.pkg.test_x) matches',
    )
    tst.add_argument(
        '--timeout',
        type=float,
        default=30.0,
        metavar='SECONDS',
        help='time one test may take (default: %(default)s)',
    )
    tst.add_argument(
        '--ignore',
        action='extend',
        type=_comma_list,
        default=[],
        metavar='PATTERN',
        help='skip the files and directories below the paths whose name '
        "matches, a glob ('.*' skips hidden ones); repeat it or separate "
        'patterns with commas, as opa test --ignore',
    )
    tst.add_argument(
        '--exit-zero-on-skipped',
        '-z',
        action='store_true',
        help='skipped tests do not make the exit status 2',
    )
    tst.add_argument(
        '--fail-on-empty',
        action='store_true',
        help='exit 1 when no test was run',
    )
    tst.set_defaults(func=_test)


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
            'modules, a manifest.json, a delegation policy.yaml and, for '
            'each rule, a _test.rego of generated opa test cases.'
        ),
    )
    _policy_inputs(conv)
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
        '--strict',
        action='store_true',
        help='treat every warning as an error (exit 1)',
    )
    conv.add_argument(
        '--no-tests',
        action='store_true',
        help="do not write each rule's generated <rule>_test.rego",
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

    ver = sub.add_parser(
        'verify',
        help='compare oslo.policy with a converted (or edited) directory',
        description=(
            'Generate inputs for every rule the original policy defines '
            'and report each rule whose decision differs between '
            'oslo.policy and the Rego in DIRECTORY, with a minimal example '
            'input.  Exit 1 when any rule differs.'
        ),
    )
    ver.add_argument('directory', help='output of oslo-opa convert')
    _policy_inputs(ver)
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
    ver.set_defaults(func=_verify)
    _add_test_command(sub)
    _add_opa_commands(sub)
    return parser


def _policy_inputs(parser: argparse.ArgumentParser) -> None:
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


# --- bundle, push, status: getting the policy into an OPA server ------------


def _bundle(args: argparse.Namespace) -> int:
    from oslo_opa import bundle

    built = bundle.build(
        args.directory,
        args.output,
        library=args.library,
        data_paths=args.data or (),
        revision=args.revision,
    )
    print(
        f'wrote {args.output}: revision {built["revision"]}, roots '
        f'{", ".join(built["roots"])}'
    )
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    from oslo_opa.drivers import http

    if args.timeout <= 0:
        raise _UsageError('--timeout must be positive')
    return http.Transport(
        args.opa_url,
        connect_timeout=min(args.timeout, 5.0),
        read_timeout=args.timeout,
        retries=1,
        max_connections=1,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        tls_verify=not args.insecure,
    )


def _push(args: argparse.Namespace) -> int:
    from oslo_opa import bundle

    client = _client(args)
    try:
        report = bundle.push(args.directory, client)
    except bundle.PushError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print(
        f'pushed {args.directory} to {args.opa_url}: {len(report.put)} '
        f'module(s) uploaded, {len(report.deleted)} removed, '
        f'{report.unchanged} unchanged'
    )
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from oslo_opa import bundle

    client = _client(args)
    try:
        st = bundle.status(client, args.directory)
    except bundle.OpaError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print(f'OPA at {args.opa_url}: {st.health}')
    for name, info in st.bundles.items():
        print(
            f'bundle {name or "(unnamed)"}: revision '
            f'{info["revision"] or "(none)"}, roots '
            f'{", ".join(info["roots"])}'
        )
    if st.bundles_error:
        print(f'bundles: cannot list them ({st.bundles_error})')
    elif not st.bundles:
        print('bundles: none (policies pushed or loaded as files)')
    elif not st.bundles_ready:
        print('bundles: not all activated yet')
    if args.directory:
        if st.bundles:
            loaded = {b['revision'] for b in st.bundles.values()}
            same = any(r in loaded for r in st.local_revisions)
            print(
                f'{args.directory}: revision '
                f'{" or ".join(st.local_revisions)} '
                + ('(loaded)' if same else '(not a loaded revision)')
            )
        print(f'rules resolved: {st.resolved}/{st.rules}')
        for name in st.unresolved[:20]:
            print(f'  unresolved: {name}')
        if len(st.unresolved) > 20:
            print(f'  ... and {len(st.unresolved) - 20} more')
    return EXIT_OK if st.ok else EXIT_FAILED


def _opa_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--opa-url',
        default='http://127.0.0.1:8181',
        metavar='URL',
        help='http://host:port, https://host:port or unix:///path.sock '
        '(default: %(default)s)',
    )
    parser.add_argument('--ca-file', help='CA bundle verifying OPA (https)')
    parser.add_argument(
        '--cert-file', help='client certificate for mutual TLS'
    )
    parser.add_argument('--key-file', help="the client certificate's key")
    parser.add_argument(
        '--insecure',
        action='store_true',
        help="do not verify OPA's certificate",
    )
    parser.add_argument(
        '--timeout',
        type=float,
        default=60.0,
        help='seconds to wait for each answer (default: %(default)s)',
    )


def _add_opa_commands(sub: Any) -> None:
    """The bundle, push and status subcommands."""
    bun = sub.add_parser(
        'bundle',
        help='write an OPA bundle of a converted policy',
        description=(
            'Write an OPA bundle (.tar.gz) of a converted directory, with a '
            '.manifest holding a content revision and the roots it owns, '
            'for opa run --bundle or a bundle server.'
        ),
    )
    bun.add_argument('directory', help='output of oslo-opa convert')
    bun.add_argument(
        '--output', '-o', required=True, metavar='FILE', help='bundle file'
    )
    bun.add_argument(
        '--library',
        choices=('include', 'exclude', 'only'),
        default='include',
        help='the helper library (data.oslo_opa.lib): in the bundle '
        '(default), left out, or alone; one OPA serving several services '
        'loads their bundles built with "exclude" and one built with "only"',
    )
    bun.add_argument(
        '--data',
        action='append',
        metavar='PATH',
        help='JSON/YAML data file or directory merged into data.json; '
        'repeatable',
    )
    bun.add_argument(
        '--revision', help='revision to record (default: content hash)'
    )
    bun.set_defaults(func=_bundle)

    psh = sub.add_parser(
        'push',
        help="upload a converted policy through OPA's Policy API",
        description=(
            'Upload the modules of a converted directory to a running OPA '
            '(PUT /v1/policies/...), removing the modules of an earlier '
            'push that are gone. All or nothing: when OPA refuses a '
            'module, every change already made is undone (exit 1).'
        ),
    )
    psh.add_argument('directory', help='output of oslo-opa convert')
    _opa_client_args(psh)
    psh.set_defaults(func=_push)

    sta = sub.add_parser(
        'status',
        help="OPA's health, bundles, and whether a manifest's rules resolve",
        description=(
            "Report OPA's health, the bundles it has activated with their "
            'revisions and, given a converted directory, whether every rule '
            'of its manifest resolves to a boolean. Exit 0 when healthy and '
            'complete, 1 otherwise.'
        ),
    )
    sta.add_argument(
        'directory', nargs='?', help='output of oslo-opa convert (optional)'
    )
    _opa_client_args(sta)
    sta.set_defaults(func=_status)


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
