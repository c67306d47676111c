"""The overlays in force over one conversion, as the engine uses them.

Which rules they can change (those a key may name, and every rule that
reads one of those), which keys each decision must ask them about, what
they read of an input, and the answers they gave: an overlay is a
function of the input it reads and the data, so the same input gets the
same answer, unless it reads the clock or a random number.
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from oslo_opa import inputs, overlay, overlay_query
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import PolicyLoadError

# Answers remembered, and the builtins whose answers change from one call
# to the next (none is remembered then).
_VERDICTS_KEPT = 4096
_UNSTABLE = re.compile(r'\b(time|rand|uuid|http|net|opa)\.[a-z_]+\(')

Verdicts = tuple[frozenset[str], frozenset[str]]


class OverlayScope:
    """What overlays mean for one converted directory.

    :param manifest: the conversion's manifest.
    :param overlays: the overlays configured, if any.
    :param own: overlay modules found in the converted directory itself
        (path -> text), honoured too.
    :param strict: a key naming no rule is an error, not a warning.
    :raises PolicyLoadError: an overlay is refused, or the conversion
        predates overlays.
    :raises StrictModeError: with strict, a key names no rule.
    """

    def __init__(
        self,
        manifest: manifest_mod.Manifest,
        overlays: overlay.Overlays | None,
        own: Mapping[str, str],
        strict: bool = False,
    ) -> None:
        if own:
            texts = dict(overlays.files) if overlays else {}
            texts.update(own)
            overlays = overlay.parse(texts)
        self.overlays = overlays or overlay.Overlays({})
        if self.overlays and not manifest.overlay_hooks:
            raise PolicyLoadError(
                f'{os.path.join(manifest.directory, manifest_mod.MANIFEST)}: '
                f'converted by an oslo.opa without overlays (its rules do '
                f'not consult them): convert the policy again'
            )
        self.warnings = self.overlays.check(
            manifest.rules, manifest.package_prefix, strict
        )
        # Rules whose decision an overlay may change: those it names and
        # those that read one of them; for each, the keys to ask about:
        # those of the rules it reads (itself included) an overlay may
        # have, and "*"; and the query module for each such list.
        self.touched: frozenset[str] = frozenset()
        self.asks: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.modules: dict[tuple, str] = {}
        if self.overlays:
            for name in manifest.rules:
                closure = manifest.closure(name)
                if not any(self.overlays.can_touch(r) for r in closure):
                    continue
                ask = (
                    tuple(self.overlays.keys_to_ask('deny', closure)),
                    tuple(self.overlays.keys_to_ask('grant', closure)),
                )
                self.asks[name] = ask
                if ask not in self.modules:
                    self.modules[ask] = overlay_query.verdicts_module(*ask)
            self.touched = frozenset(self.asks)
        self._answers: collections.OrderedDict | None = (
            None
            if _UNSTABLE.search('\n'.join(self.overlays.files.values()))
            else collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def projection(
        self, rule: str, own: tuple[list[str], list[str]] | None
    ) -> tuple[list[str], list[str]] | None:
        """What rule's input must hold, given own, what its converted
        Rego reads: with what the overlays read when they can change it
        (None: everything)."""
        if rule not in self.touched:
            return own
        theirs = self.overlays.input_keys
        if own is None or theirs is None:
            return None
        return (
            list(dict.fromkeys(own[0] + theirs[0])),
            list(dict.fromkeys(own[1] + theirs[1])),
        )

    def asked(self, doc: Mapping[str, Any]) -> Mapping[str, Any]:
        """What of doc the overlays are sent: what they read of it."""
        theirs = self.overlays.input_keys
        if theirs is None:
            return doc
        return inputs.project(doc, theirs, self.overlays.reads_rule)

    def recall(self, rule: str, asked: Mapping[str, Any]) -> Any:
        """(key, answer remembered or None) for rule's question on asked;
        the key is None when answers are not remembered."""
        if self._answers is None:
            return None, None
        key = (self.asks[rule], json.dumps(asked, sort_keys=True))
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
        return key, hit

    def remember(self, key: Any, found: Verdicts) -> None:
        if key is None or self._answers is None:
            return
        with self._lock:
            self._answers[key] = found
            if len(self._answers) > _VERDICTS_KEPT:
                self._answers.popitem(last=False)
