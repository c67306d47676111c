"""The boolean fast path of a converted rule.

A rule's three-valued ``state`` (see compile.py) is exact but costly to
evaluate.  Most inputs cannot make any check raise, and then oslo.policy's
outcomes are plain booleans; so each module also gets

* ``maybe_error``: true whenever some check of the rule, or of a rule it
  references, could raise on this input (an over-approximation: it may
  be true when nothing raises, never false when something does).  Most
  of it is ``lib.tidy``, computed once per query: roles are a list of
  strings, other credentials are scalars or empty lists, target values
  print with ``str()``;
* ``_fast``: the check string as boolean Rego, exact whenever
  ``maybe_error`` is false;

and ``allow`` is ``_fast`` when ``maybe_error`` is false, else
``state == "t"``.  This module is the one place that knows when each
check kind can raise.

``_fast`` reads a credential other than ``roles`` only through generic
checks (``key:match``), which oslo.policy walks into a list item by
item, and compares it only through ``lib.str_eq``, ``lib.cred_is`` and
``lib.cred_eq``, which do the same: the embedded driver relies on it to
send a list holding one string as that string, and a list of scalars
as it is (see ``input_profile.fast_profile``).
"""

from __future__ import annotations

import re

from oslo_policy import _checks

from oslo_opa.convert.syntax import (
    Format,
    parse_format,
    parts_term,
    ref,
    rego_string,
    try_literal,
)


class FastPath:
    """Builds ``_fast`` and ``maybe_error`` for one rule.

    :param resolve: rule reference -> rule name it evaluates, or None.
    :param package: rule name -> its Rego package.
    :param cyclic: whether the rule is part of a reference cycle.
    """

    # Where checks read the target, and what helper rules are called:
    # the batch form (batchpath.py) reads a function's argument instead.
    TARGET = 'input.target'
    HELPER = '_b'
    # Whether maybe_error and _special are built.
    MAYBE = True

    def __init__(self, resolve, package, cyclic: bool) -> None:
        self.resolve = resolve
        self.package = package
        self.cyclic = cyclic
        self.helpers: list[str] = []
        self.maybe: list[str] = []
        self._count = 0
        self._seen: dict[tuple, str] = {}
        self._hit: str | None = None

    def _rule_ref(self, rule: str) -> str:
        """What a reference to rule is in the fast path: its allow (not
        _fast: a hand-edited module need only keep allow)."""
        return f'data.{self.package(rule)}.allow'

    def _may_raise(self, condition: str) -> None:
        if condition not in self.maybe:
            self.maybe.append(condition)

    def _name(self, n: int, bodies: list[list[str]]) -> str:
        return f'_b{n}'

    def _head(self, name: str, body: list[str]) -> str:
        """The head of the helper called name, defined by body."""
        return name

    def _subst(self, fmt: Format) -> str:
        """The text fmt substitutes from the target."""
        return f'lib.subst_text({parts_term(fmt.parts)})'

    def _helper(self, bodies: list[list[str]]) -> str:
        # One helper per distinct condition: the embedded driver's query
        # time grows with the size of the compiled Rego.
        key = tuple(tuple(body) for body in bodies)
        self._hit = self._seen.get(key)
        if self._hit is not None:
            return self._hit
        self._count += 1
        name = self._seen[key] = self._name(self._count, bodies)
        for body in bodies:
            head = self._head(name, body)
            if len(body) == 1:
                self.helpers.append(f'{head} if {body[0]}')
            else:
                inner = '\n'.join(f'\t{lit}' for lit in body)
                self.helpers.append(f'{head} if {{\n{inner}\n}}')
        return name

    @property
    def special(self) -> bool:
        """Whether maybe_error holds more than lib.tidy and references
        (then a tidy input alone does not rule errors out)."""
        return self.cyclic or any(
            c != _UNTIDY and not c.startswith('data.') for c in self.maybe
        )

    def _decision(self) -> list[str]:
        """``_special`` and ``_fast_decision``, for the embedded driver.

        On an input lib.tidy accepts, ``maybe_error`` is ``_special``:
        this rule's other ways of raising and those of the rules it
        reads.  ``_fast_decision`` is then the decision, or "maybe" when
        ``_special`` holds (and ``allow`` must decide).
        """
        special = [
            f'_special if {c}'
            for c in self.maybe
            if c != _UNTIDY and not c.startswith('data.')
        ] + [
            f'_special if {c.removesuffix(".maybe_error")}._special'
            for c in self.maybe
            if c.startswith('data.')
        ]
        if not special:
            return ['_special := false', '_fast_decision := _fast']
        return [
            'default _special := false',
            *special,
            'default _fast_decision := false',
            '_fast_decision := "maybe" if _special',
            '_fast_decision if {\n\tnot _special\n\t_fast\n}',
        ]

    def rules(self, check: _checks.BaseCheck) -> tuple[list[str], list[str]]:
        """(``maybe_error`` rules, ``_fast`` rules) of the rule's module.

        The second list goes in a file of its own (``<rule>.fast.rego``):
        the embedded driver compiles the fast path without the rest.
        """
        if self.cyclic:
            return ['maybe_error := true'], [
                '_fast := false',
                '_special := true',
                '_fast_decision := "maybe"',
                *_RR_NONE,
            ]
        top = self._literal(check)
        maybe = ['default maybe_error := false']
        maybe += [f'maybe_error if {c}' for c in self.maybe]
        if top in ('true', 'false'):
            rr = self._raising_roles(check)
            return maybe, [
                *self._decision(),
                f'_fast := {top}',
                *rr,
                *self.helpers,
            ]
        fast = [*self._decision(), 'default _fast := false']
        # The last helper, made for the whole check string and used
        # nowhere else, becomes _fast itself.
        rename = top == f'_b{self._count}' and self._hit != top
        if not rename:
            fast.append(f'_fast if {top}')
        rr = self._raising_roles(check)
        helpers = self.helpers
        if rename:
            head = f'{top} if '
            mention = re.compile(rf'\b{top}\b')
            helpers = [
                '_fast if ' + h[len(head) :]
                if h.startswith(head)
                else mention.sub('_fast', h)
                for h in helpers
            ]
            rr = [mention.sub('_fast', line) for line in rr]
        return maybe, _inline_once(fast + rr + helpers)

    # --- roles that raise -------------------------------------------------
    #
    # Roles that are None, a number, or a list holding a non-string make
    # every role check oslo.policy reaches raise (once its substitutions
    # succeed).  The outcome is then three-valued, but each role check's
    # outcome is known here: so each node gets two boolean literals, T
    # (it passes) and E (it raises), composed as oslo.policy's and/or/not
    # evaluate, left to right, and most rules fold to a constant.

    def _raising_roles(self, check: _checks.BaseCheck) -> list[str]:
        """``_rr_t``, ``_rr_e`` and ``_rr_decision``: the rule passes,
        raises, and the embedded driver's decision, when roles raise."""
        t, e = self._rr(check)
        out = []
        for name, lit in (('_rr_t', t), ('_rr_e', e)):
            if lit in ('true', 'false'):
                out.append(f'{name} := {lit}')
            else:
                out += [f'default {name} := false', f'{name} if {lit}']
        if all(c == _UNTIDY for c in self.maybe):  # _special is false
            return [*out, '_rr_decision := _rr_t']
        return [
            *out,
            'default _rr_decision := false',
            '_rr_decision := "maybe" if _special',
            '_rr_decision if {\n\tnot _special\n\t_rr_t\n}',
        ]

    def _rr(self, check: _checks.BaseCheck) -> tuple[str, str]:
        """(T, E) of check when roles raise and nothing else can."""
        kind = type(check)
        if kind is _checks.RoleCheck:
            fmt = parse_format(check.match)
            if fmt.unsupported is not None or not fmt.keys:
                # (An unsupported format is _special: never asked.)
                return 'false', 'true'
            # A missing key is a KeyError, the check False; else it raises.
            text = f'lib.subst_text({parts_term(fmt.parts)})'
            return 'false', self._conj([f'is_string({text})'])
        if kind is _checks.RuleCheck:
            target = self.resolve(check.match)
            if target is None:
                return 'false', 'false'
            pkg = self.package(target)
            return f'data.{pkg}._rr_t', f'data.{pkg}._rr_e'
        if kind is _checks.NotCheck:
            t, e = self._rr(check.rule)
            return self._conj([self._neg(t), self._neg(e)]), e
        if kind in (_checks.AndCheck, _checks.OrCheck):
            parts = [self._rr(r) for r in check.rules]
            before: list[str] = []  # all earlier operands took this path
            t_bodies, e_bodies = [], []
            for i, (t, e) in enumerate(parts):
                e_bodies.append([*before, e])
                if kind is _checks.AndCheck:
                    before.append(t)
                    continue
                t_bodies.append([*before, t])
                if i + 1 < len(parts):
                    before += [self._neg(t), self._neg(e)]
            if kind is _checks.AndCheck:
                t_bodies = [before]
            return self._disj(t_bodies), self._disj(e_bodies)
        # True, False and generic checks: as on the fast path (which
        # sends this input here only when none of them can raise).
        return self._literal(check), 'false'

    def _neg(self, lit: str) -> str:
        if lit in ('true', 'false'):
            return 'false' if lit == 'true' else 'true'
        if not lit.startswith(self.HELPER):
            lit = self._helper([[lit]])
        return f'not {lit}'

    def _conj(self, lits: list[str]) -> str:
        return self._disj([lits])

    def _disj(self, bodies: list[list[str]]) -> str:
        """One literal true exactly when one of bodies holds."""
        kept = []
        for body in bodies:
            if 'false' in body:
                continue
            body = [lit for lit in body if lit != 'true']
            if not body:
                return 'true'
            kept.append(body)
        if not kept:
            return 'false'
        if len(kept) == 1 and len(kept[0]) == 1:
            return kept[0][0]
        return self._helper(kept)

    def _literal(self, check: _checks.BaseCheck) -> str:
        """One body literal true exactly when check passes."""
        kind = type(check)
        if kind is _checks.TrueCheck:
            return 'true'
        if kind is _checks.FalseCheck:
            return 'false'
        if kind is _checks.NotCheck:
            inner = self._literal(check.rule)
            if inner in ('true', 'false'):
                return 'false' if inner == 'true' else 'true'
            if not inner.startswith(self.HELPER):
                inner = self._helper([[inner]])
            return f'not {inner}'
        if kind is _checks.AndCheck:
            lits = [self._literal(r) for r in check.rules]
            if 'false' in lits:
                return 'false'
            lits = [lit for lit in lits if lit != 'true'] or ['true']
            return lits[0] if len(lits) == 1 else self._helper([lits])
        if kind is _checks.OrCheck:
            lits = [self._literal(r) for r in check.rules]
            if 'true' in lits:
                return 'true'
            lits = [lit for lit in lits if lit != 'false'] or ['false']
            if len(lits) == 1:
                return lits[0]
            return self._helper([[lit] for lit in lits])
        if kind is _checks.RuleCheck:
            target = self.resolve(check.match)
            if target is None:
                return 'false'
            pkg = self.package(target)
            self._may_raise(f'data.{pkg}.maybe_error')
            return self._rule_ref(target)
        if kind is _checks.RoleCheck:
            return self._role(parse_format(check.match))
        if kind is _checks.GenericCheck:
            return self._generic(check.kind, parse_format(check.match))
        # compile.py refuses every other class before we get here.
        raise AssertionError(f'unexpected check {check!r}')

    def _keys(self, fmt: Format) -> None:
        if fmt.keys:
            self._may_raise(_UNTIDY)

    def _role(self, fmt: Format) -> str:
        self._may_raise(_UNTIDY)
        if fmt.unsupported is not None:
            self._may_raise('true')
            return 'false'
        self._keys(fmt)
        if fmt.static is not None:
            return f'{rego_string(fmt.static.lower())} in lib.roles_list_lower'
        text = self._subst(fmt)
        return f'lib.py_lower({text}) in lib.roles_list_lower'

    def _generic(self, kind: str, fmt: Format) -> str:
        if fmt.unsupported is not None:
            self._may_raise('true')
            return 'false'
        self._keys(fmt)
        ok, value = try_literal(kind)
        if not ok:
            self._may_raise('true')  # ast.literal_eval raises
            return 'false'
        if value is not None:
            if fmt.static is not None:
                return 'true' if fmt.static == value else 'false'
            if len(fmt.parts) == 1:
                # 'member':%(x)s: str(target[x]) == 'member'
                return _equal_str(ref(self.TARGET, fmt.keys[0]), value)
            text = self._subst(fmt)
            return f'{text} == {rego_string(value)}'
        segments = kind.split('.')
        first = rego_string(segments[0])
        if segments[0] == 'roles':
            # roles is the one list lib.tidy allows: a generic check on
            # it walks it; the three-valued walk decides.
            self._may_raise(f'lib.has(input.credentials, {first})')
            return 'false'
        if len(segments) > 1:
            return self._dotted(segments, fmt)
        cred = ref('input.credentials', segments[0])
        if fmt.static is not None:
            m = fmt.static
            if m.startswith(('[', '{')):
                self._may_raise(f'lib.has(input.credentials, {first})')
            # Dicts take the three-valued path; lists of scalars are
            # walked by cred_is (the embedded driver sends them here).
            self._may_raise(_UNTIDY)
            return f'lib.cred_is({cred}, [{", ".join(_str_twins(m))}])'
        self._may_raise(_UNTIDY)
        if len(fmt.parts) == 1:
            # project_id:%(target.project.id)s, the commonest check.
            target = ref(self.TARGET, fmt.keys[0])
            return f'lib.str_eq({cred}, {target})'
        text = self._subst(fmt)
        return f'lib.cred_eq({first}, {text})'

    def _dotted(self, segments: list[str], fmt: Format) -> str:
        """token.domain.id:%(x)s, walked as oslo.policy's _find_in_dict
        walks it: a list met on the way is walked item by item, a missing
        key is False.  Where the walk meets an item that is no dict
        before its end (oslo.policy raises there), or ends on a dict or a
        list holding a container (str() of a container), the three-valued
        walk decides."""
        self._may_raise(_UNTIDY)
        walk: list[str] = []
        odd: list[list[str]] = []
        value = ref('input.credentials', segments[0])
        for i, segment in enumerate(segments[1:], 1):
            walk.append(f'some x{i} in lib.items({value})')
            odd.append([*walk, f'not is_object(x{i})'])
            value = ref(f'x{i}', segment)
        odd.append([*walk, f'lib.odd_leaf({value})'])
        # The embedded driver walks the dicts it sends in Python and says
        # so (input.walked): then none of these can hold.
        if self.MAYBE:
            self._may_raise(
                self._helper([['not input.walked', *b] for b in odd])
            )
        if fmt.static is not None:
            twins = ', '.join(_str_twins(fmt.static))
            found = f'lib.cred_is({value}, [{twins}])'
        elif len(fmt.parts) == 1:
            found = f'lib.str_eq({value}, {ref(self.TARGET, fmt.keys[0])})'
        else:
            text = self._subst(fmt)
            found = f'lib.str_eq({value}, {text})'
        return self._helper([[*walk, found]])


def _inline_once(rules: list[str]) -> list[str]:
    """Fold a one-body helper that only ``<rule> if <helper>`` uses into
    that body: each rule a query passes through costs the embedded
    engine time (about 3 us a body with regopy 1.5.2)."""
    heads = [r.split(' if ', 1)[0] for r in rules]
    out = list(rules)
    for i, rule in enumerate(rules):
        found = re.fullmatch(r'(_fast|_b[0-9]+) if (_b[0-9]+)', rule)
        if found is None:
            continue
        name = found.group(2)
        if heads.count(name) != 1:
            continue
        uses = sum(
            len(re.findall(rf'\b{name}\b', r.split(' if ', 1)[1]))
            for r in rules
            if ' if ' in r
        )
        if uses != 1:
            continue
        j = heads.index(name)
        out[i] = f'{found.group(1)} if ' + out[j].split(' if ', 1)[1]
        out[j] = ''
    return [r for r in out if r]


_INT = re.compile(r'-?(0|[1-9][0-9]*)')

# A rule in a reference cycle: never decided on a fast path.
_RR_NONE = ('_rr_t := false', '_rr_e := false', '_rr_decision := "maybe"')

# Roles that are not a list of strings, a credential that is a list (not
# empty) or a dict, a target value with no str() here: once per query,
# for every rule (the drivers send each rule only the keys it reads).
_UNTIDY = 'not lib.tidy'


def _str_twins(text: str) -> list[str]:
    """Rego terms of the scalars whose Python str() is text: the string
    itself, and a typed value that prints so."""
    values = [rego_string(text)]
    if text in ('True', 'False'):
        values.append(text.lower())
    elif text == 'None':
        values.append('null')
    elif _INT.fullmatch(text) and text != '-0':
        values.append(text)
    return values


def _equal_str(ref: str, text: str) -> str:
    """An expression true exactly when Python's str() of ref's scalar
    value is text."""
    values = _str_twins(text)
    if len(values) == 1:
        return f'{ref} == {values[0]}'
    return f'{ref} in {{{", ".join(values)}}}'
