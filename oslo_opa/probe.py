"""Inputs that exercise a rule: both outcomes of every check it reaches.

Used by the differential tests and by ``oslo-opa verify``.  For a rule
(and the rules it references) the leaves are collected: roles, credential
paths, literals and the target keys their ``%(...)s`` substitutions read.
Each generated input decides, leaf by leaf and at random, to satisfy the
leaf or to break it in one of the ways oslo.policy is sensitive to: an
unequal value, a missing key, the same text with another type (``True``
vs ``"True"``, ``1`` vs ``"1"``, ``None``), a list that holds the value
or not, a different case, a value of the wrong shape.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import warnings
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert.compile import Format, parse_format

# Values every leaf draws from, so that substitutions and comparisons
# meet often, including the awkward ones.
POOL: tuple[Any, ...] = (
    'p1',
    'p2',
    'P1',
    '',
    'True',
    True,
    False,
    'False',
    None,
    'None',
    1,
    '1',
    0,
    '0',
    'admin',
    'a"b\\c\nd',
    'é',
    '1.5',
    'x y',
    "it's",
)


@dataclasses.dataclass
class Leaves:
    """What one rule's checks read."""

    roles: list[Format] = dataclasses.field(default_factory=list)
    paths: list[tuple[list[str], Format]] = dataclasses.field(
        default_factory=list
    )
    literals: list[tuple[str, Format]] = dataclasses.field(
        default_factory=list
    )
    checks: list[_checks.BaseCheck] = dataclasses.field(default_factory=list)

    @property
    def hints(self) -> dict[str, list[Any]]:
        """Target values that make a literal check pass.

        ``'PRIMARY':%(role)s`` passes only when the target says
        ``PRIMARY``, which random values seldom do.
        """
        out: dict[str, list[Any]] = {}
        for expected, fmt in self.literals:
            if len(fmt.parts) == 1 and fmt.keys and not fmt.unsupported:
                out.setdefault(fmt.keys[0], []).extend(_typed_twins(expected))
        return out

    @property
    def target_keys(self) -> list[str]:
        keys: list[str] = []
        for fmt in (
            self.roles
            + [f for _, f in self.paths]
            + [f for _, f in self.literals]
        ):
            for key in fmt.keys:
                if key not in keys:
                    keys.append(key)
        return keys


def collect(
    rules: dict[str, _checks.BaseCheck],
    name: str,
    default_rule: str | None = None,
) -> Leaves:
    """The leaves of rule name and of every rule it references."""
    leaves = Leaves()
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        stack = [rules[current]]
        while stack:
            check = stack.pop()
            kind = type(check)
            if kind is _checks.NotCheck:
                stack.append(check.rule)
            elif kind in (_checks.AndCheck, _checks.OrCheck):
                stack.extend(check.rules)
            elif kind is _checks.RuleCheck:
                if check.match in rules:
                    pending.append(check.match)
                elif default_rule in rules:
                    pending.append(default_rule)
            elif kind is _checks.RoleCheck:
                leaves.roles.append(parse_format(check.match))
                leaves.checks.append(check)
            elif kind is _checks.GenericCheck:
                fmt = parse_format(check.match)
                leaves.checks.append(check)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        value = ast.literal_eval(check.kind)
                except ValueError:
                    leaves.paths.append((check.kind.split('.'), fmt))
                except Exception:  # noqa: BLE001, S112 - raises at enforce
                    continue
                else:
                    leaves.literals.append((str(value), fmt))
    return leaves


def _typed_twins(text: str) -> list[Any]:
    """Values whose str() is text: the text itself and typed forms."""
    twins: list[Any] = [text]
    if text in ('True', 'False'):
        twins.append(text == 'True')
    elif text == 'None':
        twins.append(None)
    else:
        try:
            number = int(text)
        except ValueError:
            pass
        else:
            if str(number) == text:
                twins.append(number)
    return twins


def _confusions(text: str) -> list[Any]:
    """Near misses: other types, other case, text that only looks alike."""
    out: list[Any] = [text.upper(), text.lower(), text + ' ', 'x' + text]
    if text in ('True', 'False', '1', '0', 'None'):
        out += ['true', 'false', 1.0, '1.0', 'TRUE', 'none']
    return [v for v in out if str(v) != text]


def _substitute(fmt: Format, target: dict[str, Any]) -> str | None:
    parts = []
    for p in fmt.parts:
        if isinstance(p, tuple):
            if p[1] not in target:
                return None
            parts.append(str(target[p[1]]))
        else:
            parts.append(p)
    return ''.join(parts)


def _put(creds: dict[str, Any], path: list[str], value: Any) -> None:
    """Set creds[path...] = value, replacing what stands in the way."""
    node = creds
    for seg in path[:-1]:
        nxt = node.get(seg)
        if not isinstance(nxt, dict):
            nxt = node[seg] = {}
        node = nxt
    node[path[-1]] = value


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What else to try, beyond the policy's own checks: the strings
    overlays compare (and their data holds), the credential and target
    keys they read.  Without one, inputs are as before."""

    strings: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()
    target_keys: tuple[str, ...] = ()


class InputGenerator:
    """Random inputs for one rule, reproducible from the seed."""

    def __init__(
        self,
        leaves: Leaves,
        seed: int | str = 0,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.leaves = leaves
        self.rng = random.Random(seed)  # noqa: S311 - test data
        self.vocabulary = vocabulary

    def _target(self) -> dict[str, Any]:
        rng = self.rng
        target: dict[str, Any] = {}
        hints = self.leaves.hints
        for key in self.leaves.target_keys:
            if rng.random() < 0.85:
                if key in hints and rng.random() < 0.4:
                    target[key] = rng.choice(hints[key])
                else:
                    target[key] = rng.choice(POOL)
        if rng.random() < 0.2:
            target['unrelated'] = rng.choice(POOL)
        return target

    def _roles(self, creds: dict[str, Any], target: dict[str, Any]) -> None:
        rng = self.rng
        roles: list[Any] = []
        for fmt in self.leaves.roles:
            text = _substitute(fmt, target)
            if text is None:
                text = rng.choice(['p1', 'admin'])
            if rng.random() < 0.5:
                roles.append(
                    rng.choice([text, text.upper(), text.title(), text])
                )
        if rng.random() < 0.3:
            roles.append(rng.choice(['member', 'Reader', 'ADMIN', 'é']))
        rng.shuffle(roles)
        shape = rng.random()
        if shape < 0.06:
            return  # no 'roles' key at all
        if shape < 0.09:
            creds['roles'] = rng.choice([None, 1, True, {'admin': 1}])
        elif shape < 0.12:
            creds['roles'] = ''.join(str(r) for r in roles) or 'a'
        elif shape < 0.15:
            creds['roles'] = roles + [rng.choice([1, None, ['x']])]
        else:
            creds['roles'] = roles

    def _path_value(self, text: str | None) -> Any:
        rng = self.rng
        roll = rng.random()
        if text is not None and roll < 0.45:
            value = rng.choice(_typed_twins(text))
        elif text is not None and roll < 0.65:
            value = rng.choice(_confusions(text) or [rng.choice(POOL)])
        else:
            value = rng.choice(POOL)
        if rng.random() < 0.15:
            others = [rng.choice(POOL) for _ in range(rng.randint(0, 2))]
            others.insert(rng.randint(0, len(others)), value)
            value = others
        return value

    def _paths(self, creds: dict[str, Any], target: dict[str, Any]) -> None:
        rng = self.rng
        # Checks on one path overwrite each other: vary which one wins.
        paths = list(self.leaves.paths)
        rng.shuffle(paths)
        for path, fmt in paths:
            text = _substitute(fmt, target)
            roll = rng.random()
            if roll < 0.1:
                continue  # leave it missing
            value = self._path_value(text)
            if len(path) > 1 and rng.random() < 0.25:
                # Lists of dicts on the way, or a scalar where a dict is
                # expected (oslo.policy raises there).
                cut = rng.randint(1, len(path) - 1)
                if rng.random() < 0.6:
                    inner: dict[str, Any] = {}
                    _put(inner, path[cut:], value)
                    decoy = {'other': rng.choice(POOL)}
                    items = [inner, decoy]
                    rng.shuffle(items)
                    _put(creds, path[:cut], items)
                else:
                    _put(creds, path[:cut], rng.choice(POOL))
                continue
            _put(creds, path, value)

    def generate(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """One (creds, target) pair."""
        target = self._target()
        creds: dict[str, Any] = {}
        for key in ('user_id', 'project_id', 'domain_id'):
            if self.rng.random() < 0.3:
                creds[key] = self.rng.choice(POOL)
        self._roles(creds, target)
        self._paths(creds, target)
        if self.vocabulary is not None:
            self._words(creds, target, self.vocabulary)
        return creds, target

    def _words(
        self, creds: dict[str, Any], target: dict[str, Any], vocab: Vocabulary
    ) -> None:
        """The vocabulary's strings as roles, and as the values of the
        keys it names."""
        rng = self.rng
        words = list(vocab.strings) or list(POOL)
        if vocab.strings and rng.random() < 0.5:
            word = rng.choice(words)
            role = rng.choice([word, word.upper(), word.title()])
            roles = creds.get('roles')
            if isinstance(roles, list):
                creds['roles'] = [*roles, role]
            elif 'roles' not in creds:
                creds['roles'] = [role]
        for key in vocab.credentials:
            if key != 'roles' and rng.random() < 0.4:
                creds[key] = rng.choice(words)
        for key in vocab.target_keys:
            if rng.random() < 0.4:
                target[key] = rng.choice(words)

    def inputs(self, count: int) -> list[tuple[dict, dict]]:
        return [self.generate() for _ in range(count)]
