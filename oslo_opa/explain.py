"""Why a rule decided as it did: the check tree, node by node.

:func:`explain` returns one JSON-able object::

    {"rule": "<name>", "decision": true|false, "tree": <node>,
     "notes": ["..."]}

where every node is::

    {"kind": "and"|"or"|"not"|"rule"|"check"|"overlay",
     "text": "...", "outcome": "pass"|"fail"|"raise",
     "reached": true|false, "children": [...]}

``rule`` nodes are the explained rule itself (the root) and each
``rule:X`` it reads; their one child is that rule's check tree, or none
when only its final outcome is known (a hand-edited rule: ``note``
says so).  Where overlays may change a rule, its child is oslo.policy's
reading of the overlay contract, ``(grant or <check tree>) and not
deny``, with ``overlay`` leaves (``reasons``: overlay key -> reasons).
A ``check`` node carries what it compared: ``match`` (as written),
``target`` (the ``%(key)s`` values) and ``credentials`` (the values of
the credentials it reads: mask them before logging, see :func:`mask`).
``reached`` is false for a node oslo.policy's left-to-right
short-circuit would not evaluate.  The leaves recompute the decision
with oslo.policy's ``and``/``or``/``not`` and raise semantics
(:func:`recompute`).

Every outcome is read from the Rego in force, evaluated by the embedded
engine (regopy) on the same input: each node is the sub-expression of
the rule's ``state`` that the converter wrote for it, compiled again
from the manifest's check string by the same compiler and used only when
the module is unedited and holds exactly that ``state``
(``convert/explain_rules.py``).  They are compiled into a bundle of
their own, for the explained rule and the rules it reads, so decisions
never pay for them.  A ``rule:X`` node's outcome is X's decision as
the reading rule sees it (its ``_ruleN``), hand edits and overlays
included.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from oslo_opa import inputs
from oslo_opa.convert import explain_rules, syntax
from oslo_opa.engine import EvaluationError, RegoPolicy
from oslo_opa.explain_text import mask, render, render_leaves

__all__ = [
    'Explainer',
    'explain',
    'failing_leaves',
    'mask',
    'recompute',
    'render',
    'render_leaves',
]

_OUTCOMES = {'t': 'pass', 'f': 'fail', 'e': 'raise'}
# Explain bundles kept per policy (each tens of milliseconds to build).
BUNDLES_KEPT = 64
EDITED = (
    'hand-edited (its modules are not what the converter wrote): only '
    'its final outcome is known'
)
UNPROVEN = (
    "not explainable: this oslo.opa's converter does not write its Rego "
    'from its check string (converted by another version?); only its '
    'final outcome is known'
)

LIBRARY = (
    'the helper library differs from what the converter wrote, or '
    'modules of your own sit beside it: every outcome is still the Rego '
    "in force's, evaluated with them"
)


class Explainer:
    """Explains a RegoPolicy's decisions (one per policy; thread-safe).

    Explain bundles are built on first use, one per explained rule, and
    the last :data:`BUNDLES_KEPT` kept: tens of milliseconds each.
    """

    def __init__(self, policy: RegoPolicy) -> None:
        self.policy = policy
        manifest = policy.manifest
        self._compiler = explain_rules.ExplainCompiler(
            {n: e.check_str for n, e in manifest.rules.items()},
            manifest.default_rule,
            manifest.package_prefix,
        )
        self._plans: dict[str, explain_rules.Plan | None] = {}
        self._bundles: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- what can be explained --------------------------------------------

    def plan(self, rule: str) -> explain_rules.Plan | None:
        """rule's explain plan, or None: only its outcome is known."""
        if rule not in self._plans:
            self._plans[rule] = self._make_plan(rule)
        return self._plans[rule]

    def _make_plan(self, rule: str) -> explain_rules.Plan | None:
        p = self.policy
        if rule in p._b.edited:
            return None
        entry = p.manifest.rules[rule]
        return self._compiler.plan(
            rule,
            p._b.package(rule),
            p.modules[entry.module],
            entry.deps,
            p.manifest.overlay_hooks,
        )

    def why_unknown(self, rule: str) -> str:
        return EDITED if rule in self.policy._b.edited else UNPROVEN

    def _bundle(self, rule: str) -> Any:
        """The explain bundle of rule: its full bundle's modules, the
        overlays and the explain module of every rule it reads."""
        with self._lock:
            bundle = self._bundles.pop(rule, None)
            if bundle is None:
                bundle = self._build(rule)
            # Most recently used last; a service explaining every rule
            # keeps only the last few bundles (each holds a closure).
            self._bundles[rule] = bundle
            while len(self._bundles) > BUNDLES_KEPT:
                del self._bundles[next(iter(self._bundles))]
        return bundle

    def _build(self, rule: str) -> Any:
        p = self.policy
        b = p._b
        texts = b.texts(b.full_names(rule))
        entrypoints = []
        for r in p.manifest.closure(rule):
            plan = self.plan(r)
            if plan is not None:
                texts[f'explain:{r}'] = plan.module
                entrypoints.append(explain_rules.entrypoint(plan.package))
        data = p.data_json if b.reads_data[rule] or p.overlays else None
        if p.overlays:
            texts.update(p.overlays.files)
        return b.compile(texts, entrypoints, f'rule {rule!r} (explain)', data)

    # --- explaining --------------------------------------------------------

    def explain(
        self,
        rule: str,
        creds: Mapping[str, Any],
        target: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The explanation of rule's decision on creds (already a dict,
        as ``inputs.credentials_dict`` makes it) and target.

        :raises KeyError: rule is not in the policy.
        :raises inputs.UnrepresentableInput: a value cannot be carried.
        :raises PolicyLoadError: the explain bundle does not compile.
        """
        p = self.policy
        if rule not in p.manifest.rules:
            raise KeyError(rule)
        doc = inputs.document(creds, target, rule)
        notes: list[str] = []
        if not p._b.trusted:
            notes.append(LIBRARY)
        try:
            decision = p.evaluate(rule, p.input_for(rule, creds, target))
        except EvaluationError as e:
            decision = False
            notes.append(f'the engine gave no decision ({e}): it denies')
        values = self._values(rule, doc) if self.plan(rule) else {}
        reasons = p.overlay_reasons(rule, doc) if p.overlays else None
        build = _TreeBuilder(self, values, reasons, doc)
        own = values.get(rule)
        if own is None:
            root_outcome = 'pass' if decision else 'fail'
        else:
            root_outcome = _decided(own)
            if (root_outcome == 'pass') != decision:
                notes.append(
                    'the explained Rego decides otherwise than the '
                    'decision path: report this as a bug'
                )
        tree = build.rule_node(rule, rule, root_outcome)
        _mark_reached(tree, True)
        return {
            'rule': rule,
            'decision': decision,
            'tree': tree,
            'notes': notes,
        }

    def _values(self, rule: str, doc: Mapping[str, Any]) -> dict[str, dict]:
        """Each explainable rule of the closure -> its ``_explain``."""
        bundle = self._bundle(rule)
        out = {}
        for r in self.policy.manifest.closure(rule):
            plan = self.plan(r)
            if plan is None:
                continue
            path = explain_rules.entrypoint(plan.package)
            ok, text = self.policy._query(bundle, path, doc)
            value = _parse(text) if ok else None
            if value is None:
                raise EvaluationError(f'rule {r!r}: no explanation')
            out[r] = value
        return out


def _parse(text: str) -> dict | None:
    """The _explain object in a query's result text, or None."""
    try:
        value = json.loads(text)['expressions'][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    ok = (
        isinstance(value, dict)
        and isinstance(value.get('nodes'), list)
        and all(v in _OUTCOMES for v in value['nodes'])
    )
    return value if ok else None


def _decided(value: Mapping[str, Any]) -> str:
    """A rule's decision as a reading rule sees it (its _ruleN)."""
    if value.get('allow') is True:
        return 'pass'
    return 'raise' if value.get('error') is True else 'fail'


class _TreeBuilder:
    """Turns plans and the values the engine gave into result nodes."""

    def __init__(
        self,
        explainer: Explainer,
        values: dict[str, dict],
        reasons: dict[str, dict[str, list[str]]] | None,
        doc: Mapping[str, Any],
    ) -> None:
        self.explainer = explainer
        self.values = values
        self.reasons = reasons
        self.doc = doc

    def rule_node(self, rule: str, text: str, outcome: str) -> dict:
        """A rule node: rule's decision (outcome) and why."""
        node = _node('rule', text, outcome)
        node['rule'] = rule
        plan = self.explainer.plan(rule)
        if plan is None or rule not in self.values:
            node['note'] = self.explainer.why_unknown(rule)
            return node
        body = self.tree(plan.tree, self.values[rule]['nodes'])
        if self._overlaid(rule):
            body = self._overlay(rule, body, self.values[rule])
        node['children'] = [body]
        return node

    def tree(self, n: explain_rules.Node, states: list[str]) -> dict:
        node = _node(n.kind, n.text, _OUTCOMES[states[n.index]])
        if n.kind == 'check':
            node.update(_compared(n.check, self.doc))
        elif n.reads is not None:
            read = self.rule_node(n.reads, n.text, node['outcome'])
            if n.reads != n.check.match:
                notes = [
                    f'{n.check.match!r} is not defined: the default rule '
                    f'{n.reads!r} decides',
                    read.get('note'),
                ]
                read['note'] = '; '.join(x for x in notes if x)
            return read
        elif n.note is not None:
            node['note'] = n.note
        node['children'] = [self.tree(c, states) for c in n.children]
        return node

    def _overlaid(self, rule: str) -> bool:
        p = self.explainer.policy
        return bool(p.overlays) and p.overlays.can_touch(rule)

    def _overlay(self, rule: str, body: dict, value: Mapping) -> dict:
        """oslo.policy's reading of the overlay contract on rule:
        ``(grant or <body>) and not deny``, which decides as the
        converted ``allow`` and ``error`` do (see the module doc)."""
        grant = self._overlay_leaf('grant', rule, value.get('granted'))
        deny = self._overlay_leaf('deny', rule, value.get('denied'))
        either = _node('or', 'an overlay grants it, or its check string')
        either['children'] = [grant, body]
        either['outcome'] = _combine('or', [grant, body])
        negated = _node('not', 'no overlay denies it', 'fail')
        negated['children'] = [deny]
        negated['outcome'] = _combine('not', [deny])
        both = _node('and', '(grant or check string) and not deny')
        both['children'] = [either, negated]
        both['outcome'] = _combine('and', [either, negated])
        return both

    def _overlay_leaf(self, kind: str, rule: str, holds: Any) -> dict:
        keys = [json.dumps(rule), '"*"']
        node = _node(
            'overlay',
            ' or '.join(f'{kind}[{k}]' for k in keys),
            'pass' if holds is True else 'fail',
        )
        found = (self.reasons or {}).get(kind, {})
        node['reasons'] = {k: found[k] for k in (rule, '*') if k in found}
        return node


def _node(kind: str, text: str, outcome: str = 'fail') -> dict[str, Any]:
    return {'kind': kind, 'text': text, 'outcome': outcome, 'children': []}


def _compared(check: Any, doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a check compared: its match, the target values it
    substitutes, the credentials it reads (under ``credentials``, so
    that they can be masked)."""
    out: dict[str, Any] = {'match': getattr(check, 'match', None)}
    match = out['match']
    keys = syntax.parse_format(match).keys if isinstance(match, str) else []
    target = doc['target']
    out['target'] = {k: target.get(k) for k in keys if k in target}
    missing = [k for k in keys if k not in target]
    if missing:
        out['missing_target'] = missing
    kind = getattr(check, 'kind', None)
    creds = doc['credentials']
    read = None
    if kind == 'role':
        read = 'roles'
    elif isinstance(kind, str) and syntax.try_literal(kind) == (True, None):
        read = kind.split('.')[0]
    out['credentials'] = {read: creds[read]} if read in creds else {}
    if read is not None and read not in creds:
        out['missing_credentials'] = [read]
    return out


def _combine(kind: str, children: list[dict]) -> str:
    """oslo.policy's and/or/not on the children's outcomes."""
    outcomes = [c['outcome'] for c in children]
    if kind == 'not':
        return {'pass': 'fail', 'fail': 'pass'}.get(outcomes[0], 'raise')
    stop = 'pass' if kind == 'and' else 'fail'
    for o in outcomes:
        if o != stop:
            return o
    return stop


def _mark_reached(node: dict, reached: bool) -> None:
    """reached: whether oslo.policy's left-to-right evaluation gets to
    the node (Rego evaluates every operand; oslo.policy stops early)."""
    node['reached'] = reached
    going = reached
    for child in node['children']:
        _mark_reached(child, going)
        if node['kind'] == 'and' and child['outcome'] != 'pass':
            going = False
        elif node['kind'] == 'or' and child['outcome'] != 'fail':
            going = False


# --- reading an explanation ---------------------------------------------


def recompute(node: Mapping[str, Any]) -> str:
    """node's outcome from its leaves alone, with oslo.policy's
    and/or/not and raise semantics (a rule node is its child)."""
    children = node.get('children') or []
    if not children:
        return node['outcome']
    if node['kind'] == 'rule':
        return recompute(children[0])
    done = [{'outcome': recompute(c)} for c in children]
    return _combine(node['kind'], done)


def failing_leaves(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The leaves that decided a denial: down every ``or`` that failed
    (all its operands), the first operand that did not pass of an
    ``and``, the operand of a ``not`` (a leaf that passed, there:
    ``negated`` says so).  Each leaf without its children; empty for an
    allowed request.  Credentials are under each leaf's
    ``credentials``: :func:`mask` the result before logging it."""
    if result.get('decision'):
        return []
    out: list[dict[str, Any]] = []
    _culprits(result['tree'], False, out)
    return out


def _culprits(node: Mapping[str, Any], negated: bool, out: list) -> None:
    children = node.get('children') or []
    if not children:
        leaf = {k: v for k, v in node.items() if k != 'children'}
        leaf['negated'] = negated
        out.append(leaf)
        return
    kind = node['kind']
    if kind == 'and':
        bad = [c for c in children if c['outcome'] != 'pass'][:1]
    elif kind == 'or' and node['outcome'] == 'raise':
        bad = [c for c in children if c['outcome'] == 'raise'][:1]
    elif kind == 'or':
        bad = list(children)
    else:
        bad = children[:1]
    for child in bad:
        _culprits(child, negated != (kind == 'not'), out)


def _explainer(policy: RegoPolicy) -> Explainer:
    with _EXPLAINERS_LOCK:
        found = _EXPLAINERS.get(policy)
        if found is None:
            found = _EXPLAINERS[policy] = Explainer(policy)
    return found


_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()


def explain(
    policy: RegoPolicy,
    rule: str,
    creds: Any,
    target: Mapping[str, Any],
) -> dict[str, Any]:
    """Explain policy's decision of rule (see the module doc).

    :param creds: a dict or an oslo.context ``RequestContext``.
    :raises KeyError: rule is not in the policy.
    :raises inputs.UnrepresentableInput: a value cannot be carried.
    :raises PolicyLoadError: the explain bundle does not compile.
    :raises EvaluationError: the engine gave no explanation.
    """
    creds_dict = inputs.credentials_dict(creds)
    return _explainer(policy).explain(rule, creds_dict, target)
