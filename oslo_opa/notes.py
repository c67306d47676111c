"""What the last decision on this thread took, for decision logs and
metrics: set by the engine and the drivers, read by the Decider right
after ``Driver.decide`` returns.  A thread-local attribute costs far
less than returning a record from every driver call.

``route``: ``fast`` (a fast path decided), ``full`` (the rule's whole
module), ``overlay`` (an overlay decided), ``remote`` (an OPA server).
``decision_id``: the id OPA gave the decision, when it logs decisions,
so that its log and oslo.opa's join.
"""

from __future__ import annotations

import threading

last = threading.local()


def take() -> tuple[str | None, str | None]:
    """(route, decision_id) of this thread's last decision, cleared."""
    route = getattr(last, 'route', None)
    decision_id = getattr(last, 'decision_id', None)
    last.route = last.decision_id = None
    return route, decision_id
