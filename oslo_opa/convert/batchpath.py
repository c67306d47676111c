"""The batch form of a rule's fast path: many targets in one query.

``decide_many`` asks one rule about many targets for one caller (a list
of ports filtered for a user).  The fast path (``fastpath.py``) reads the
target from ``input.target``, so each target takes a query of its own,
and every check that reads only credentials is evaluated again for each.
The batch form is the same boolean Rego with the target a function's
argument, in a file of its own (``<rule>.batch.rego``):

* a rule whose checks, or the rules it reads, substitute from the target
  (``project_id:%(project_id)s``): ``_fast_t(t)``, with helpers
  ``_tN(t)``, and ``_fast_batch``: ``_fast_t`` of each item of
  ``input.targets``, in order;
* any other rule: ``_fast_c``, with helpers ``_cN``, evaluated once per
  query however many targets there are (a target rule reads it as
  ``data.<package>._fast_c``).

``_fast_t(t)`` is ``_fast`` on the input ``{"credentials": input.
credentials, "target": t}``: exact where ``_fast`` is, on an input
``lib.tidy`` accepts whose ``_special`` is false (which reads only
credentials).  Overlays are not consulted: the drivers use the batch form
only where ``_fast`` would decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from oslo_policy import _checks

from oslo_opa.convert.fastpath import FastPath
from oslo_opa.convert.syntax import Format, parse_format, parts_term

# A body that names the argument (a string literal "t" may match too: the
# argument is then named though unused, which Rego allows).
_USES_T = re.compile(r'\bt\b')


def target_readers(
    rules: Mapping[str, _checks.BaseCheck],
    graph: Mapping[str, Iterable[str]],
) -> set[str]:
    """The rules whose checks, or the rules they read (graph: rule ->
    rules it reads), substitute a target key."""
    readers = {name for name, check in rules.items() if _substitutes(check)}
    changed = True
    while changed:
        changed = False
        for name, deps in graph.items():
            if name not in readers and any(d in readers for d in deps):
                readers.add(name)
                changed = True
    return readers


def _substitutes(check: _checks.BaseCheck) -> bool:
    if isinstance(check, (_checks.RoleCheck, _checks.GenericCheck)):
        fmt = parse_format(check.match)
        return fmt.unsupported is None and bool(fmt.keys)
    subs = list(getattr(check, 'rules', ()))
    if isinstance(check, _checks.NotCheck):
        subs.append(check.rule)
    return any(_substitutes(s) for s in subs)


class BatchPath(FastPath):
    """Builds the batch form of one rule (see the module's docstring).

    :param reads_target: rule name -> whether it is a target rule.
    :param rule: the rule's name.
    """

    MAYBE = False

    def __init__(
        self,
        resolve,
        package,
        cyclic: bool,
        reads_target: Callable[[str], bool],
        rule: str,
    ) -> None:
        super().__init__(resolve, package, cyclic)
        self.reads_target = reads_target
        self.own = reads_target(rule)
        if self.own:
            self.TARGET = 't'
            self.HELPER = '_t'
        else:
            self.HELPER = '_c'

    def _may_raise(self, condition: str) -> None:
        """Nothing: the batch form is asked only where nothing raises."""

    def _name(self, n: int, bodies: list[list[str]]) -> str:
        return f'_t{n}(t)' if self.own else f'_c{n}'

    def _head(self, name: str, body: list[str]) -> str:
        if self.own and not any(_USES_T.search(lit) for lit in body):
            return name.replace('(t)', '(_)')
        return name

    def _subst(self, fmt: Format) -> str:
        if not self.own:
            return super()._subst(fmt)
        return f'lib.subst_text_t({parts_term(fmt.parts)}, t)'

    def _rule_ref(self, rule: str) -> str:
        pkg = self.package(rule)
        if self.reads_target(rule):
            return f'data.{pkg}._fast_t(t)'
        return f'data.{pkg}._fast_c'

    def _only_top(self, top: str) -> bool:
        """Whether top is a helper that no other helper calls."""
        name = top.split('(')[0]
        if not name.startswith(self.HELPER) or top != self._name(
            self._count, []
        ):
            return False
        mention = re.compile(rf'\b{name}\b')
        return not any(
            mention.search(h.split(' if ', 1)[1]) for h in self.helpers
        )

    def batch_rules(self, check: _checks.BaseCheck) -> list[str]:
        """The rules of ``<rule>.batch.rego``."""
        head, default = (
            ('_fast_t(t)', '_fast_t(_)')
            if self.own
            else (
                '_fast_c',
                '_fast_c',
            )
        )
        top = 'false' if self.cyclic else self._literal(check)
        helpers = self.helpers
        if top in ('true', 'false'):
            out = [f'{default} := {top}']
        elif self._only_top(top):
            # The helper made for the whole check string becomes the rule
            # itself: a call less for each target.
            name = top.split('(')[0]
            out = [f'default {default} := false']
            helpers = [
                re.sub(rf'^{name}\b', head.split('(')[0], h) for h in helpers
            ]
        else:
            if not _USES_T.search(top):
                head = default
            out = [f'default {default} := false', f'{head} if {top}']
        out += _inline_once(helpers)
        if self.own:
            out.append(
                '_fast_batch := [d | some t in input.targets; d := _fast_t(t)]'
            )
        return out


_CALL_ONLY = re.compile(r'(_fast_t|_t[0-9]+)\((?:t|_)\) if (_t[0-9]+)\(t\)')


def _inline_once(rules: list[str]) -> list[str]:
    """Fold a one-body helper that only ``<f>(t) if <helper>(t)`` calls
    into that body: each call costs every target (fastpath.py does the
    same for the fast path)."""
    out = list(rules)
    changed = True
    while changed:
        changed = False
        heads = [r.split('(', 1)[0] for r in out]
        for i, rule in enumerate(out):
            found = _CALL_ONLY.fullmatch(rule)
            if found is None:
                continue
            name = found.group(2)
            if heads.count(name) != 1:
                continue
            mention = re.compile(rf'\b{name}\(')
            uses = sum(
                len(mention.findall(r.split(' if ', 1)[1]))
                for r in out
                if ' if ' in r
            )
            if uses != 1:
                continue
            body = out[heads.index(name)].split(' if ', 1)[1]
            arg = 't' if _USES_T.search(body) else '_'
            out[i] = f'{found.group(1)}({arg}) if {body}'
            del out[heads.index(name)]
            changed = True
            break
    return out
