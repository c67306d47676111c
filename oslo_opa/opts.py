"""The ``[oslo_opa]`` options, and ``list_opts`` for oslo-config-generator.

``oslo-config-generator --namespace oslo.opa`` prints them.
"""

from __future__ import annotations

import copy

from oslo_config import cfg

GROUP = 'oslo_opa'

_options = [
    cfg.StrOpt(
        'driver',
        default='embedded',
        help='How decisions are made: "embedded" evaluates the converted '
        'Rego in this process (regopy); "http" asks an OPA server '
        '(sidecar). Other drivers plug in through the oslo_opa.drivers '
        'entry point namespace.',
    ),
    cfg.StrOpt(
        'rego_path',
        help='The directory written by "oslo-opa convert": its '
        'manifest.json, the Rego modules and the helper library. Required '
        'by the embedded driver, and by failure_mode = fallback.',
    ),
    cfg.ListOpt(
        'data_path',
        default=[],
        help='JSON or YAML files, or directories of them, whose top-level '
        'objects are merged into the Rego "data" document (for rules that '
        'read relationships or other data). Reloaded like rego_path.',
    ),
    cfg.StrOpt(
        'failure_mode',
        default='deny',
        choices=[
            ('deny', 'Deny when no decision can be had (fail closed).'),
            (
                'fallback',
                "Decide with the rule's oslo.policy check string recorded "
                'in the manifest when the driver fails.',
            ),
        ],
        help='What a decision is when the driver cannot make one (policy '
        'not loadable, rule missing, evaluation error, OPA unreachable).',
    ),
    cfg.IntOpt(
        'cache_size',
        default=1024,
        min=0,
        help='Decisions remembered per process, keyed by the rule and the '
        'exact input the policy reads. 0 turns the cache off. Entries are '
        'dropped whenever the policy or data is reloaded.',
    ),
    cfg.FloatOpt(
        'cache_ttl',
        default=30.0,
        min=0.0,
        help='Seconds a remembered decision stays valid.',
    ),
    cfg.FloatOpt(
        'reload_interval',
        default=5.0,
        min=0.0,
        help='Seconds between checks of rego_path and data_path for '
        'changed files (checked on decisions, like oslo.policy does for '
        'policy files). 0 checks on every decision.',
    ),
    cfg.BoolOpt(
        'strict_builtin_errors',
        default=True,
        help='Make a Rego builtin error an evaluation error (a deny, or '
        'the fallback) instead of an undefined value.',
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[oslo_opa]`` options on conf (idempotent)."""
    conf.register_opts(_options, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options, for oslo-config-generator (``oslo.config.opts``)."""
    return [(GROUP, copy.deepcopy(_options))]
