"""Check trees to Rego: one module per rule, oslo.policy's semantics.

Each rule becomes a package with ``state`` ("t", "f" or "e", see
``rego/oslo_opa/lib.rego``), ``allow`` (state is "t") and ``error``
(state is "e").  This is the only place that knows what each of
oslo.policy's check classes means; the Rego helpers it calls are in the
library.  Everything here is pure: a rule table in, module texts out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from oslo_policy import _checks

from oslo_opa.convert import naming
from oslo_opa.convert.batchpath import BatchPath, target_readers
from oslo_opa.convert.fastpath import FastPath
from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.syntax import (
    Format,
    comment,
    parse_format,
    parts_term,
    rego_string,
    try_literal,
)
from oslo_opa.errors import ConversionError

# How many check nodes a rule that is part of a reference cycle may
# expand to before the converter gives up on it.
MAX_CYCLE_EXPANSION = 20000


@dataclasses.dataclass
class CompiledRule:
    """One converted rule.

    :ivar name: the oslo.policy rule name.
    :ivar package: its Rego package (``keystone.identity_get_project``).
    :ivar module: the Rego module text: ``allow``, ``maybe_error`` and
        the three-valued ``state``.
    :ivar fast_module: the same package's boolean fast path (``_fast``),
        written to a file of its own.
    :ivar batch_module: the fast path's batch form (``batchpath.py``).
    :ivar check_str: the effective check string, as oslo.policy prints it.
    :ivar deps: rules whose packages this module reads.
    :ivar target_keys: target keys its ``%(...)s`` substitutions read.
    :ivar credentials: top-level credential keys its checks read.
    :ivar dotted_credentials: those read only through dotted paths
        (``token.domain.id``): the fast path walks them if they are
        dicts.
    :ivar dotted_paths: those paths.
    :ivar ascii_lowering: its role checks lower-case only input text (so
        an all-ASCII input never needs Unicode case mapping).
    :ivar fast_entry: only an untidy input (``lib.tidy`` false) can make
        its own checks raise, so for a tidy one ``_fast`` is ``allow``.
    """

    name: str
    package: str
    module: str
    fast_module: str
    check_str: str
    deps: list[str]
    target_keys: list[str]
    credentials: list[str]
    dotted_credentials: list[str] = dataclasses.field(default_factory=list)
    dotted_paths: list[str] = dataclasses.field(default_factory=list)
    ascii_lowering: bool = True
    fast_entry: bool = False
    batch_module: str = ''

    @property
    def query(self) -> str:
        return f'data.{self.package}.allow'

    @property
    def path(self) -> str:
        return self.package.replace('.', '/') + '/allow'


@dataclasses.dataclass
class Conversion:
    """The result of :func:`compile_table`."""

    rules: dict[str, CompiledRule]
    prefix: str
    default_rule: str | None
    warnings: list[str]
    # oslo.policy's warnings about deprecated rules (RuleTable's).
    deprecations: list[str] = dataclasses.field(default_factory=list)


# --- check trees ----------------------------------------------------------


def _references(check: _checks.BaseCheck) -> Iterable[str]:
    if type(check) is _checks.RuleCheck:
        yield check.match
    for sub in getattr(check, 'rules', ()):
        yield from _references(sub)
    if isinstance(check, _checks.NotCheck):
        yield from _references(check.rule)


def _cyclic_components(graph: dict[str, list[str]]) -> dict[str, int]:
    """Tarjan's SCCs; map each rule in a cycle to its component id."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: dict[str, int] = {}
    counter = 0
    component = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1 or node in graph[node]:
                    for member in members:
                        result[member] = component
                    component += 1
    return result


class _RuleCompiler:
    """Compiles one rule's tree; rules in a cycle are inlined."""

    def __init__(self, conv: _TableCompiler, name: str) -> None:
        self.conv = conv
        self.name = name
        self.deps: list[str] = []
        self.target_keys: list[str] = []
        self.credentials: list[str] = []
        # Keys some check reads as a whole (not through a dotted path).
        self.flat_credentials: set[str] = set()
        self.dotted_paths: list[str] = []
        # Whether lower-casing only ever meets the input's own text.
        self.ascii_lowering = True
        self.size = 0

    def lib(self, call: str) -> str:
        return f'lib.{call}'

    def compile(self, check: _checks.BaseCheck, stack: tuple[str, ...]) -> str:
        self.size += 1
        if self.size > MAX_CYCLE_EXPANSION:
            raise ConversionError(
                f'rule {self.name!r}: its reference cycle expands to more '
                f'than {MAX_CYCLE_EXPANSION} checks; break the cycle'
            )
        kind = type(check)
        if kind is _checks.TrueCheck:
            return '"t"'
        if kind is _checks.FalseCheck:
            return '"f"'
        if kind is _checks.NotCheck:
            return self.lib(f'negate({self.compile(check.rule, stack)})')
        if kind in (_checks.AndCheck, _checks.OrCheck):
            fn = 'all_of' if kind is _checks.AndCheck else 'any_of'
            subs = ', '.join(self.compile(r, stack) for r in check.rules)
            return self.lib(f'{fn}([{subs}])')
        if kind is _checks.RuleCheck:
            return self._rule(check.match, stack)
        if kind is _checks.RoleCheck:
            return self._role(check.match)
        if kind is _checks.GenericCheck:
            return self._generic(check.kind, check.match)
        what = getattr(check, 'kind', type(check).__name__)
        if what == 'opa':
            raise ConversionError(
                f'rule {self.name!r}: {check} already delegates to '
                f'oslo.opa; convert the original policy, not a delegation '
                f'file'
            )
        if what in ('http', 'https'):
            raise ConversionError(
                f'rule {self.name!r}: {check} asks a remote server; '
                f'oslo.opa does not convert http: and https: checks '
                f'(Rego would need http.send, which the embedded engine '
                f'lacks and which would move the remote call into the '
                f'policy engine); replace the check before converting'
            )
        raise ConversionError(
            f'rule {self.name!r}: {check} is handled by '
            f'{type(check).__module__}.{type(check).__qualname__}, a check '
            f'class oslo.opa cannot convert'
        )

    def _rule(self, ref: str, stack: tuple[str, ...]) -> str:
        target = self.conv.resolve(ref)
        if target is None:
            # Rules.__missing__ raised KeyError: RuleCheck returns False.
            return '"f"'
        if target in stack:
            cycle = ' -> '.join(stack[stack.index(target) :] + (target,))
            self.conv.warn(
                f'rule {self.name!r}: reference cycle {cycle}; oslo.policy '
                f'raises when it reaches the cycle, the converted rule '
                f'denies there'
            )
            return '"e"'
        component = self.conv.components.get(self.name)
        if (
            component is not None
            and self.conv.components.get(target) == component
        ):
            return self.compile(
                self.conv.table.rules[target], stack + (target,)
            )
        if target not in self.deps:
            self.deps.append(target)
        # The rule as it decides (its allow, then its error), not its
        # state: an overlay or a hand edit of allow holds here too.
        return f'_rule{self.deps.index(target) + 1}'

    def _note_keys(self, fmt: Format) -> None:
        for key in fmt.keys:
            if key not in self.target_keys:
                self.target_keys.append(key)

    def _note_cred(self, key: str, dotted: bool = False) -> None:
        if key not in self.credentials:
            self.credentials.append(key)
        if not dotted:
            self.flat_credentials.add(key)

    def _unsupported(self, fmt: Format, what: str) -> str:
        self.conv.warn(
            f'rule {self.name!r}: {what}: the substitution '
            f'{fmt.unsupported!r} is not %(key)s; the converted check '
            f'denies whenever oslo.policy would get that far'
        )
        return self.lib(f'failed({parts_term(fmt.parts)})')

    def _role(self, match: str) -> str:
        fmt = parse_format(match)
        self._note_keys(fmt)
        self._note_cred('roles')
        if fmt.unsupported is not None:
            return self._unsupported(fmt, f'role:{match}')
        if fmt.static is not None:
            lowered = fmt.static.lower()
            return self.lib(f'role_lowered({rego_string(lowered)})')
        if not all(p.isascii() for p in fmt.parts if isinstance(p, str)):
            # py_lower runs on this module's own non-ASCII text.
            self.ascii_lowering = False
        return self.lib(f'role({parts_term(fmt.parts)})')

    def _generic(self, kind: str, match: str) -> str:
        fmt = parse_format(match)
        self._note_keys(fmt)
        if fmt.unsupported is not None:
            return self._unsupported(fmt, f'{kind}:{match}')
        ok, expected = try_literal(kind)
        if not ok:
            self.conv.warn(
                f'rule {self.name!r}: {kind}:{match}: oslo.policy raises '
                f'reading {kind!r} as a literal; the converted check '
                f'denies whenever it is reached'
            )
            return self.lib(f'failed({parts_term(fmt.parts)})')
        if expected is None:
            return self._path(kind, fmt)
        if fmt.static is not None:
            return '"t"' if fmt.static == expected else '"f"'
        return self.lib(
            f'literal({parts_term(fmt.parts)}, {rego_string(expected)})'
        )

    def _path(self, kind: str, fmt: Format) -> str:
        segments = kind.split('.')
        self._note_cred(segments[0], dotted=len(segments) > 1)
        if len(segments) > 1 and kind not in self.dotted_paths:
            self.dotted_paths.append(kind)
        branches = self.lib('root')
        for seg in segments:
            branches = self.lib(f'step({branches}, {rego_string(seg)})')
        return self.lib(f'generic({parts_term(fmt.parts)}, {branches})')


class _TableCompiler:
    def __init__(self, table: RuleTable, prefix: str) -> None:
        self.table = table
        self.prefix = prefix
        self.warnings: list[str] = []
        self.packages = naming.packages(list(table.rules), prefix)
        graph = {
            name: [
                t
                for t in (self.resolve(r) for r in _references(check))
                if t is not None
            ]
            for name, check in table.rules.items()
        }
        self.components = _cyclic_components(graph)
        self.target_readers = target_readers(table.rules, graph)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def resolve(self, ref: str) -> str | None:
        """The rule ``rule:<ref>`` evaluates, as Rules.__missing__ does."""
        rules = self.table.rules
        if ref in rules:
            return ref
        default = self.table.default_rule
        if default and default in rules:
            return default
        return None

    def compile_rule(self, name: str) -> CompiledRule:
        rc = _RuleCompiler(self, name)
        check = self.table.rules[name]
        state = rc.compile(check, (name,))
        fastpath = FastPath(
            self.resolve,
            self.packages.__getitem__,
            cyclic=name in self.components,
        )
        maybe, fast = fastpath.rules(check)
        package = self.packages[name]
        header = [
            f'# Converted by oslo.opa from the oslo.policy rule '
            f'{comment(name)}',
            f'# check string: {comment(_check_str(check))}',
        ]
        lines = [*header, f'package {package}', '']
        lines += ['import data.oslo_opa.lib', '']
        lines += _decision(name)
        for n, dep in enumerate(rc.deps, 1):
            lines += _reference(n, dep, self.packages[dep])
        for rule in maybe:
            lines += [rule, '']
        lines += [
            '# "t", "f" or "e": the check string passes, fails, or raises.',
            f'state := {state}',
            '',
        ]
        what = '# The boolean fast path: exact whenever maybe_error is false.'
        fast_module = _module([*header, what], package, fast)
        return CompiledRule(
            batch_module=self._batch_module(name, check, header),
            name=name,
            package=package,
            module='\n'.join(lines),
            fast_module=fast_module,
            check_str=_check_str(check),
            deps=rc.deps,
            target_keys=rc.target_keys,
            credentials=rc.credentials,
            dotted_credentials=[
                k for k in rc.credentials if k not in rc.flat_credentials
            ],
            dotted_paths=rc.dotted_paths,
            ascii_lowering=rc.ascii_lowering,
            fast_entry=not fastpath.special,
        )

    def _batch_module(self, name: str, check, header: list[str]) -> str:
        batch = BatchPath(
            self.resolve,
            self.packages.__getitem__,
            name in self.components,
            self.target_readers.__contains__,
            name,
        ).batch_rules(check)
        return _module(
            [
                *header,
                '# The fast path with the target an argument: many targets in',
                '# one query (see oslo_opa/convert/batchpath.py).',
            ],
            self.packages[name],
            batch,
        )


def _module(comments: list[str], package: str, rules: list[str]) -> str:
    """A module of rules in package, under comments, importing the
    library if they call it."""
    lines = [*comments, f'package {package}', '']
    if 'lib.' in '\n'.join(rules):
        lines += ['import data.oslo_opa.lib', '']
    for rule in rules:
        lines += [rule, '']
    return '\n'.join(lines)


def _decision(name: str) -> list[str]:
    """allow, error and the overlay hooks of rule name's module."""
    rule = rego_string(name)
    return [
        '# The decision: false when an overlay denies this rule, else true',
        '# when one grants it, else the check string: its boolean fast path',
        '# (_fast, in the .fast.rego file of this package) when no check',
        '# can raise on this input, else the three-valued state.',
        'default allow := false',
        '',
        'allow if {',
        '\tnot _denied',
        '\t_granted',
        '}',
        '',
        'allow if {',
        '\tnot _denied',
        '\tnot maybe_error',
        '\t_fast',
        '}',
        '',
        'allow if {',
        '\tnot _denied',
        '\tmaybe_error',
        '\tstate == "t"',
        '}',
        '',
        '# oslo.policy would raise on this input (and no overlay grants it).',
        'default error := false',
        '',
        'error if {',
        '\tnot _granted',
        '\tmaybe_error',
        '\tstate == "e"',
        '}',
        '',
        '# Overlays (modules in package oslo_opa.overlay) on this rule.',
        f'_denied if lib.overlay_denies({rule})',
        '',
        f'_granted if lib.overlay_grants({rule})',
        '',
    ]


def _reference(n: int, rule: str, package: str) -> list[str]:
    """``_rule<n>``: what rule:<rule> evaluates to, as that rule decides
    ("t" when it allows, "e" when it would raise, else "f")."""
    return [
        f'# rule:{comment(rule)}',
        f'_rule{n} := "t" if data.{package}.allow',
        '',
        f'else := "e" if data.{package}.error',
        '',
        'else := "f"',
        '',
    ]


def _check_str(check: _checks.BaseCheck) -> str:
    # Rules.__str__ writes the always-true check as ''.
    return '' if type(check) is _checks.TrueCheck else str(check)


def compile_table(table: RuleTable, prefix: str) -> Conversion:
    """Convert every rule of table into a Rego module under prefix.

    :raises ConversionError: for a rule that cannot be converted.
    """
    for name in table.rules:
        try:
            name.encode('utf-8')
        except UnicodeEncodeError as e:
            raise ConversionError(
                f'rule {name!r}: the name is not valid Unicode text'
            ) from e
    tc = _TableCompiler(table, prefix)
    rules = {name: tc.compile_rule(name) for name in table.rules}
    return Conversion(
        rules=rules,
        prefix=prefix,
        default_rule=table.default_rule,
        warnings=list(table.warnings) + tc.warnings,
        deprecations=list(table.deprecations),
    )
