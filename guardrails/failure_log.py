"""Guardrail failures in the log: the first of a kind at once, then a count a minute.

A guardrail that times out, is busy or meets an oversize request tends to do so for
every request of a burst; one line per request would bury the log. The first
occurrence per (tenant, guardrail, stage, reason) is logged in full; later ones are
counted and summarised on the first occurrence after `interval_s`. Every occurrence
is still counted in /metrics (`sluice_guardrail_actions_total`, action
``error.<reason>`` or ``block.oversize``). Messages name sizes, limits, tenants and
guardrails, never text.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("sluice.guardrails")

_MAX_KEYS = 4096


class FailureLog:
    def __init__(self, interval_s: float = 60.0) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        # key -> [time of the last line, occurrences since]
        self._seen: dict[tuple[str, ...], list[float]] = {}

    def report(self, key: tuple[str, ...], message: str) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._seen.get(key)
            if state is None:
                if len(self._seen) >= _MAX_KEYS:
                    self._seen.clear()
                self._seen[key] = [now, 0]
                line = f"{message} (repeats are counted and logged once a minute)"
            elif now - state[0] < self._interval_s:
                state[1] += 1
                return
            else:
                repeats, since = int(state[1]), now - state[0]
                state[0], state[1] = now, 0
                line = f"{message} (and {repeats} more like it in the last {since:.0f} s)"
        log.warning("guardrails: %s", line)
