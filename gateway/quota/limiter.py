"""The limiter contract: one small interface, two implementations.

    Limiter
    ├── RedisLimiter  (redis_limiter.py)  shared by every replica; one EVALSHA per request,
    │                                     settlements batched into one EVALSHA per few ms
    └── LocalLimiter  (local_limiter.py)  the same rules in this process (no redis_url)

Both answer `reserve()` with a `Decision` (admitted or why not, and every subject's
counters for the headers) and take `settle()` without waiting. `LimiterUnavailable` is
the only error `reserve()` raises: the service applies the configured fail mode.
"""

from __future__ import annotations

from typing import Protocol

from gateway.quota.model import Decision, Estimate, Reservation, SubjectSet, SubjectState


class LimiterUnavailable(Exception):
    """The shared state could not be reached in time."""


class Limiter(Protocol):
    shared: bool                     # True: the state holds across replicas
    description: str                 # for the start-up log (no secrets)

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def reserve(self, subjects: SubjectSet, request_id: str, estimate: Estimate) -> Decision:
        """Check every subject and, if all admit, reserve in each (atomically)."""
        ...

    def settle(self, reservation: Reservation, tokens: int, nano_usd: int) -> None:
        """Replace the reservation's estimate by what was used; never waits."""
        ...

    async def peek(self, subjects: SubjectSet) -> tuple[int, list[SubjectState]]:
        """(now in ms, each subject's counters) without changing anything."""
        ...


def decision_from_values(values: list[int], nsub: int) -> Decision:
    """A Decision from the reserve script's flat answer (also the local limiter's)."""
    return Decision(values, nsub)
