"""The effective rule table: what an oslo.policy Enforcer would enforce.

Policy files, registered defaults (``oslo.policy.policies`` entry points)
and a service's ``[oslo_policy]`` options are combined by a real
:class:`oslo_policy.policy.Enforcer`, so overrides, deprecated rules and
``enforce_new_defaults`` behave exactly as they do in the service.  This
module only adds what the Enforcer does not say: where each rule came
from, and clear errors for bad input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from oslo_config import cfg
from oslo_policy import _checks, _parser
from oslo_policy import opts as policy_opts
from oslo_policy import policy as oslo_policy

from oslo_opa.errors import ConversionError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class RuleTable:
    """The rules an Enforcer holds after ``load_rules()``.

    :ivar rules: rule name to parsed check tree, in the Enforcer's order.
    :ivar default_rule: ``policy_default_rule``, the rule an undefined
        ``rule:`` reference falls back to (when it is defined).
    :ivar origins: rule name to where it came from, for messages.
    :ivar scope_types: rule name to the registered scope_types, if any.
    :ivar warnings: problems worth telling the operator about.
    :ivar deprecations: what oslo.policy warns about deprecated rules
        when it loads the same rules, in its own words.
    """

    rules: dict[str, _checks.BaseCheck]
    default_rule: str | None = None
    origins: dict[str, str] = dataclasses.field(default_factory=dict)
    scope_types: dict[str, list[str] | None] = dataclasses.field(
        default_factory=dict
    )
    warnings: list[str] = dataclasses.field(default_factory=list)
    deprecations: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_strings(
        cls,
        rules: dict[str, Any],
        default_rule: str | None = 'default',
        origin: str = '<dict>',
    ) -> RuleTable:
        """Parse ``name: check string`` pairs as oslo.policy's Rules do."""
        table = cls(rules={}, default_rule=default_rule)
        for name, value in rules.items():
            _check_value(name, value, origin)
            table.rules[name] = _parse_quietly(value, name, table)
            table.origins[name] = origin
        return table


def read_policy_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON policy file the way oslo.policy does.

    :raises ConversionError: naming the file, and the line when known.
    """
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f'{path}: cannot read policy file: {e}') from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f'{path}:{mark.line + 1}' if mark is not None else path
        problem = getattr(e, 'problem', None) or str(e).splitlines()[0]
        raise ConversionError(
            f'{where}: not valid YAML or JSON: {problem}'
        ) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConversionError(
            f'{path}:1: a policy file must map rule names to check '
            f'strings, found a {type(data).__name__}'
        )
    lines = _key_lines(text)
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConversionError(
                f'{path}:{lines.get(str(name), 1)}: rule name {name!r} '
                f'is not a string'
            )
        _check_value(name, value, f'{path}:{lines.get(name, 1)}')
    return data


def _key_lines(text: str) -> dict[str, int]:
    """Map each top-level key to its 1-based line (best effort)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    lines = {}
    for key, _value in node.value:
        lines[str(key.value)] = key.start_mark.line + 1
    return lines


def _check_value(name: str, value: Any, where: str) -> None:
    """Refuse values oslo.policy would crash on at load time."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(
        isinstance(x, str)
        or (isinstance(x, list) and all(isinstance(y, str) for y in x))
        for x in value
    ):
        return
    raise ConversionError(
        f'{where}: rule {name!r}: the value must be a check string or a '
        f'list of lists of check strings, found {value!r}'
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _parser_errors() -> Iterator[_Capture]:
    """Collect what oslo.policy's parser logs instead of raising."""
    logger = logging.getLogger(_parser.__name__)
    handler = _Capture()
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    # Whatever level the application gave oslo_policy's loggers, the
    # parser's errors must reach the handler (and only the handler).
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate, level = saved
        logger.setLevel(level)


def _parse_quietly(value: Any, name: str, table: RuleTable) -> Any:
    with _parser_errors() as errors:
        check = _parser.parse_rule(value)
    if errors.messages:
        table.warnings.append(
            f'rule {name!r}: oslo.policy cannot parse {value!r} and '
            f'fails closed on what it cannot parse; the converted rule '
            f'does the same'
        )
    return check


def _load_namespaces(namespaces: Sequence[str]) -> list[Any]:
    import stevedore

    defaults: list[Any] = []
    for ns in namespaces:
        mgr = stevedore.named.NamedExtensionManager(
            'oslo.policy.policies',
            names=[ns],
            invoke_on_load=True,
            on_load_failure_callback=_raise_load_failure,
        )
        if not mgr.names():
            raise ConversionError(
                f'namespace {ns!r}: no oslo.policy.policies entry point '
                f'of that name is installed'
            )
        for ext in mgr:
            defaults.extend(ext.obj)
    return defaults


def _raise_load_failure(_mgr: Any, ep: Any, err: Exception) -> None:
    raise ConversionError(
        f'namespace {ep.name!r}: loading its policies failed: {err}'
    ) from err


def load_rule_table(
    policy_files: Sequence[str] = (),
    namespaces: Sequence[str] = (),
    config_file: str | None = None,
    enforce_new_defaults: bool | None = None,
    defaults: Sequence[oslo_policy.RuleDefault] = (),
) -> RuleTable:
    """Build the effective rule table from a service's policy inputs.

    :param policy_files: YAML or JSON policy files; later files override
        earlier ones, as ``policy_dirs`` do.  They replace the config
        file's ``policy_file``.
    :param namespaces: ``oslo.policy.policies`` entry point names whose
        registered defaults are loaded.
    :param config_file: a service config file whose ``[oslo_policy]``
        options (``policy_file``, ``policy_dirs``,
        ``enforce_new_defaults``, ``policy_default_rule``) apply.
    :param enforce_new_defaults: overrides the config file's value.
    :param defaults: RuleDefault objects to register, besides namespaces.
    :raises ConversionError: on any bad input, naming it.
    """
    file_data = [
        (path, read_policy_file(path), _file_key_lines(path))
        for path in policy_files
    ]
    all_defaults = list(defaults) + _load_namespaces(namespaces)

    conf = cfg.ConfigOpts()
    try:
        conf(
            args=[],
            default_config_files=[config_file] if config_file else [],
        )
    except (cfg.Error, OSError) as e:
        raise ConversionError(f'{config_file}: {e}') from e
    if config_file and not os.access(config_file, os.R_OK):
        raise ConversionError(f'{config_file}: cannot read config file')

    # Registers [oslo_policy] without changing any default.
    policy_opts.set_defaults(conf)
    with tempfile.TemporaryDirectory(prefix='oslo-opa-') as tmp:
        if file_data or not config_file:
            merged: dict[str, Any] = {}
            for _path, data, _lines in file_data:
                merged.update(data)
            merged_path = os.path.join(tmp, 'policy.json')
            with open(merged_path, 'w', encoding='utf-8') as f:
                json.dump(merged, f)
            conf.set_override('policy_file', merged_path, 'oslo_policy')
        if not config_file:
            conf.set_override('policy_dirs', [], 'oslo_policy')
        if enforce_new_defaults is not None:
            conf.set_override(
                'enforce_new_defaults', enforce_new_defaults, 'oslo_policy'
            )
        enforcer = oslo_policy.Enforcer(conf)
        try:
            enforcer.register_defaults(all_defaults)
        except oslo_policy.DuplicatePolicyError as e:
            raise ConversionError(f'registered defaults: {e}') from e

        with (
            _parser_errors() as errors,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter('always')
            try:
                enforcer.load_rules()
            except (ValueError, TypeError) as e:
                raise ConversionError(f'loading rules failed: {e}') from e

        default_rule = conf.oslo_policy.policy_default_rule or None
        table = RuleTable(
            rules=dict(enforcer.rules),
            default_rule=default_rule,
            deprecations=_deprecations(caught),
        )
        if config_file and not file_data and enforcer.policy_path is None:
            table.warnings.append(
                f'{config_file}: [oslo_policy] policy_file '
                f'{conf.oslo_policy.policy_file!r} was not found; only '
                f'registered defaults are converted'
            )

    for path, data, lines in file_data:
        for name, value in data.items():
            if value is None:
                table.warnings.append(
                    f'{path}:{lines.get(name, 1)}: rule {name!r} has no '
                    f'value; oslo.policy reads that as "@" (always allow)'
                )
    _record_origins(table, file_data, enforcer, all_defaults)
    if errors.messages:
        _name_parse_failures(table, enforcer)
    return table


def _deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    """oslo.policy's warnings about deprecated rules, each once, in its
    words (they all start with 'Policy "<name>":')."""
    out: list[str] = []
    for w in caught:
        text = str(w.message)
        if text.startswith('Policy "') and text not in out:
            out.append(text)
    return out


def _record_origins(
    table: RuleTable,
    file_data: list[tuple[str, dict[str, Any], dict[str, int]]],
    enforcer: oslo_policy.Enforcer,
    defaults: Sequence[oslo_policy.RuleDefault],
) -> None:
    registered = {d.name: d for d in defaults}
    for name in table.rules:
        where = None
        for path, data, lines in file_data:
            if name in data:
                where = f'{path}:{lines.get(name, 1)}'
        if where is None and name in enforcer.file_rules:
            where = 'policy file from the config file'
        if where is None and name in registered:
            where = 'registered default'
        table.origins[name] = where or 'unknown'
        default = registered.get(name)
        table.scope_types[name] = (
            list(default.scope_types)
            if default is not None and default.scope_types
            else None
        )


def _file_key_lines(path: str) -> dict[str, int]:
    with open(path, encoding='utf-8') as f:
        return _key_lines(f.read())


def _name_parse_failures(
    table: RuleTable, enforcer: oslo_policy.Enforcer
) -> None:
    """Say which rules oslo.policy could not parse (it only logs)."""
    for name in table.rules:
        sources: list[Any] = []
        if name in enforcer.file_rules:
            sources.append(enforcer.file_rules[name].check_str)
        elif name in enforcer.registered_rules:
            default = enforcer.registered_rules[name]
            sources.append(default.check_str)
            if default.deprecated_rule is not None:
                sources.append(default.deprecated_rule.check_str)
        for source in sources:
            _parse_quietly(source, name, table)
