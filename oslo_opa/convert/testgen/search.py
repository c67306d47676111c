"""Finding the input of one case of a rule: the solver's truth values
made into inputs first, random inputs (:mod:`oslo_opa.probe`), reduced to
what they need, where those find none; oslo.policy confirms each."""

from __future__ import annotations

import copy

from oslo_policy import _checks

from oslo_opa import inputs
from oslo_opa.convert.rules import RuleTable
from oslo_opa.convert.syntax import parse_format
from oslo_opa.convert.testgen.leaves import NOT, leaf_of
from oslo_opa.convert.testgen.materialize import materialize
from oslo_opa.convert.testgen.oracle import Oracle
from oslo_opa.convert.testgen.solver import Solver
from oslo_opa.convert.testgen.targets import Target

# The solver's solutions tried for one case before random inputs: a
# bound, so that a case the leaves' values cannot give costs little.
MAX_CANDIDATES = 24
# Random inputs tried, per rule, for cases the solver could not build.
RANDOM_INPUTS = 150


def _document(creds: dict, target: dict, rule: str) -> dict | None:
    try:
        return inputs.build_input(creds, target, rule)
    except inputs.UnrepresentableInput:
        return None


class InputSearch:
    """The inputs of one rule's cases (``build``: one per Target)."""

    def __init__(
        self,
        table: RuleTable,
        oracle: Oracle,
        solver: Solver,
        name: str,
        known_roles: list[str],
    ) -> None:
        from oslo_opa import probe

        self.oracle = oracle
        self.solver = solver
        self.name = name
        self.known_roles = known_roles
        self.root = table.rules[name]
        self.leaves = probe.collect(table.rules, name, table.default_rule)
        self.has_roles = bool(self.leaves.roles)
        self.avoid = set()
        for check in self.leaves.checks:
            self.avoid.update(
                p.lower()
                for p in parse_format(check.match).parts
                if isinstance(p, str)
            )
            self.avoid.add(check.kind.lower())
        self._random: list[dict] | None = None

    def build(self, t: Target) -> dict | None:
        goals = [(c, w, (self.name,)) for c, w in t.constraints]
        near = set()
        for check in t.near:
            while type(check) is NOT:
                check = check.rule
            if type(check) in (_checks.RoleCheck, _checks.GenericCheck):
                ident = leaf_of(check)[0]
                if ident is not None:  # a constant ('True:True')
                    near.add(ident)
        enrich = any(ident[0] == 'role' for ident in near)
        tried = 0
        complete = True
        for assign in self.solver.solve(goals):
            tried += 1
            made = materialize(assign, near, self.has_roles, self.avoid)
            doc = made and _document(made[0], made[1], self.name)
            if doc and self.oracle.holds(t, self.name, doc):
                return self._other_roles(t, doc) if enrich else doc
            # An input the leaves' values did not give may exist.
            complete = False
            if tried >= MAX_CANDIDATES:
                break
        if complete and not self.solver.incomplete:
            # No truth values of the leaves meet t: no input can.
            return None
        return self._search(t)

    def _other_roles(self, t: Target, doc: dict) -> dict:
        """doc with every other role of the policy that keeps t: a
        failing role check then fails for a caller holding all the
        roles but that one, not only for one holding none."""
        roles = doc['credentials']['roles']
        for role in self.known_roles:
            if role.lower() in {r.lower() for r in roles}:
                continue
            trial = copy.deepcopy(doc)
            trial['credentials']['roles'].append(role)
            if self.oracle.holds(t, self.name, trial):
                doc, roles = trial, trial['credentials']['roles']
        return doc

    def _search(self, t: Target) -> dict | None:
        """A random input that meets t, reduced to what it needs."""
        if self._random is None:
            from oslo_opa import probe

            gen = probe.InputGenerator(self.leaves, seed=self.name)
            docs = (
                _document(c, tg, self.name)
                for c, tg in gen.inputs(RANDOM_INPUTS)
            )
            self._random = [d for d in docs if d is not None]
        for doc in self._random:
            if self.oracle.holds(t, self.name, doc):
                return self._reduce(t, doc)
        return None

    def _reduce(self, t: Target, doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        for part in ('credentials', 'target'):
            for key in list(doc[part]):
                trial = copy.deepcopy(doc)
                del trial[part][key]
                if part == 'credentials' and key == 'system_scope':
                    trial[part].pop('system', None)
                if self.oracle.holds(t, self.name, trial):
                    doc = trial
        return doc
