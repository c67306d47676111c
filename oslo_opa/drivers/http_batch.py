"""The http driver's ``decide_many``: many decisions in one request.

OPA's open-source server has no batch endpoint: the bundle carries batch
rules instead (``oslo_opa/batch.py``).  Items are sent as

* groups: the targets of one rule for one caller (a list of ports
  filtered for a user), at least ``GROUP_MIN`` of them, for a rule whose
  batch form OPA holds; decided by ``rules[<slug>]``, which evaluates
  what reads only the credentials once for all of them;
* single items: the others, each decided as one ``allow`` query would.

One request (``decisions``) carries both, up to ``BATCH_LIMIT``
decisions; one that holds a single group and nothing else goes to the
rule's path (``rules/<slug>``), which spares OPA a ``with input as``
over the group.  Where OPA has no ``decisions`` rule (an older bundle),
the items go to ``results`` as single items; where it has no batch rule
at all, or could not answer a request whole (an item erred: it gets its
error, the others their decisions), one request per item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa import batch
from oslo_opa.drivers.base import DecisionError
from oslo_opa.drivers.transport import TransportError

# Decisions asked in one request at most.
BATCH_LIMIT = 1000
# Targets of one rule for one caller sent as a group, at least.
GROUP_MIN = 4

# An item: (position in decide_many's list, rule, slug, input document).
Item = tuple[int, str, str, Any]


class HttpBatching:
    """``decide_many`` for :class:`~oslo_opa.drivers.http.HttpDriver`."""

    def decide_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool | DecisionError]:
        """Several decisions in one request per BATCH_LIMIT of them."""
        policy = self._policy
        if len(items) < 2 or self._no_batch or policy is None:
            return super().decide_many(items)
        out: list[bool | DecisionError | None] = [None] * len(items)
        asked: list[Item] = []
        for i, (rule, doc) in enumerate(items):
            entry = policy.manifest.rules.get(rule)
            if entry is None:
                out[i] = DecisionError(f'rule {rule!r} is not in the manifest')
            else:
                asked.append((i, rule, entry.path.rsplit('/', 2)[-2], doc))
        prefix = policy.manifest.package_prefix
        for groups, singles in _requests(asked, self._grouped_rules(policy)):
            got = self._decisions(prefix, groups, singles)
            for i, value in got.items():
                out[i] = value
        return out  # type: ignore[return-value]

    def _grouped_rules(self, policy: Any) -> frozenset[str]:
        """The rules whose batch form OPA holds, if it has ``decisions``."""
        if self._no_groups:
            return frozenset()
        if self._groupable is None or self._groupable[0] is not policy:
            names = {r for r, *_ in batch.batch_rules(policy.manifest)}
            self._groupable = (policy, frozenset(names))
        return self._groupable[1]

    def _decisions(
        self, prefix: str, groups: list[list[Item]], singles: list[Item]
    ) -> dict[int, bool | DecisionError]:
        """The decisions of one request's groups and single items."""
        if not groups:
            return self._singles(prefix, singles)
        if len(groups) == 1 and not singles:
            # A list filtered for one caller: the rule's own path, which
            # spares OPA a "with input as" over the whole group.
            got = self._group(prefix, groups[0])
            if got is not None:
                return got
        if self._open or self._closed.is_set():
            every = [m for g in groups for m in g] + singles
            return {
                i: DecisionError(self._not_asking(r)) for i, r, *_ in every
            }
        try:
            body = batch.decisions_body(
                [
                    (g[0][2], g[0][3].get('credentials'), g[0][1],
                     [d.get('target') for *_, d in g])
                    for g in groups
                ],
                [(slug, doc) for _, _, slug, doc in singles],
            )  # fmt: skip
            path = f'/v1/data/{batch.decisions_path(prefix)}{self._query}'
            status, data = self.transport.request('POST', path, body)
        except (TypeError, ValueError):
            status, data = 0, b''
        except TransportError as e:
            self._trip(e)
            every = [m for g in groups for m in g] + singles
            return {
                i: DecisionError(f'rule {r!r}: OPA at {self.url}: {e}')
                for i, r, *_ in every
            }
        parsed = None
        if status == 200:
            parsed = batch.decisions_answers(
                data, [len(g) for g in groups], len(singles)
            )
            if parsed is None:
                self._no_groups = True  # an older bundle
        if parsed is None:
            # An item erred, or no decisions rule: as single items.
            return self._singles(
                prefix, [m for g in groups for m in g] + singles
            )
        out: dict[int, bool | DecisionError] = {}
        rest: list[Item] = []
        for group, values in zip(groups, parsed[0], strict=True):
            if values is None:
                rest += group
            else:
                out.update(
                    (m[0], v) for m, v in zip(group, values, strict=True)
                )
        for item, answer in zip(singles, parsed[1], strict=True):
            out[item[0]] = _answer(item[1], answer)
        if rest:
            out.update(self._singles(prefix, rest))
        return out

    def _group(
        self, prefix: str, group: list[Item]
    ) -> dict[int, bool | DecisionError] | None:
        """One group's decisions from its rule's path, or None to ask
        otherwise."""
        if self._open or self._closed.is_set():
            return {
                i: DecisionError(self._not_asking(r)) for i, r, *_ in group
            }
        _, rule, slug, first = group[0]
        try:
            body = batch.group_body(
                first.get('credentials'),
                first.get('rule', rule),
                [d.get('target') for *_, d in group],
            )
        except (TypeError, ValueError):
            return None
        path = f'/v1/data/{batch.rule_path(prefix, slug)}{self._query}'
        try:
            status, data = self.transport.request('POST', path, body)
        except TransportError as e:
            self._trip(e)
            return {
                i: DecisionError(f'rule {r!r}: OPA at {self.url}: {e}')
                for i, r, *_ in group
            }
        if status != 200:
            return self._singles(prefix, group)  # a target erred
        values = batch.group_answers(data, len(group))
        if values is None:
            return None
        return {m[0]: v for m, v in zip(group, values, strict=True)}

    def _singles(
        self, prefix: str, items: list[Item]
    ) -> dict[int, bool | DecisionError]:
        """Single items: the ``results`` rule, else one request each."""
        got = self._batch(prefix, items) if items else []
        if got is None:
            got = super().decide_many([(r, d) for _, r, _, d in items])
        return {m[0]: v for m, v in zip(items, got, strict=True)}

    def _batch(
        self, prefix: str, chunk: list[Item]
    ) -> list[bool | DecisionError] | None:
        """One batch's decisions, or None to ask its items one by one."""
        if self._open or self._closed.is_set():
            return [DecisionError(self._not_asking(r)) for _, r, _, _ in chunk]
        try:
            body = batch.body([(slug, doc) for _, _, slug, doc in chunk])
        except (TypeError, ValueError):
            return None
        try:
            status, data = self.transport.request(
                'POST', f'/v1/data/{batch.path(prefix)}{self._query}', body
            )
        except TransportError as e:
            self._trip(e)
            return [
                DecisionError(f'rule {r!r}: OPA at {self.url}: {e}')
                for _, r, _, _ in chunk
            ]
        if status != 200:
            return None  # an item erred: each gets its own answer
        answers = batch.answers(data, len(chunk))
        if answers is None:
            # No batch rule in OPA (a bundle not built by oslo-opa, or
            # an older one): ask one by one until the policy changes.
            self._no_batch = True
            return None
        return [
            _answer(r, a)
            for (_, r, _, _), a in zip(chunk, answers, strict=True)
        ]


def _answer(rule: str, answer: Any) -> bool | DecisionError:
    if answer is not None:
        return answer
    return DecisionError(
        f'rule {rule!r}: no boolean allow in OPA for this input (is the '
        f'policy loaded? see oslo-opa status)'
    )


def _requests(
    asked: list[Item], grouped: frozenset[str]
) -> list[tuple[list[list[Item]], list[Item]]]:
    """asked as requests of at most BATCH_LIMIT decisions: groups (the
    items of one rule in grouped with the first's credentials, at least
    GROUP_MIN) and single items."""
    by_rule: dict[str, list[Item]] = {}
    for item in asked:
        by_rule.setdefault(item[1], []).append(item)
    units: list[tuple[bool, list[Item]]] = []
    singles: list[Item] = []
    for rule, members in by_rule.items():
        creds = members[0][3].get('credentials')
        same = [m for m in members if m[3].get('credentials') == creds]
        if rule not in grouped or len(same) < GROUP_MIN:
            singles += members
            continue
        singles += [m for m in members if m[3].get('credentials') != creds]
        units += [
            (True, same[s : s + BATCH_LIMIT])
            for s in range(0, len(same), BATCH_LIMIT)
        ]
    units += [(False, [s]) for s in singles]
    requests: list[tuple[list[list[Item]], list[Item]]] = []
    size = BATCH_LIMIT
    for grouped_unit, unit in units:
        if size + len(unit) > BATCH_LIMIT:
            requests.append(([], []))
            size = 0
        size += len(unit)
        if grouped_unit:
            requests[-1][0].append(unit)
        else:
            requests[-1][1].append(unit[0])
    return requests
