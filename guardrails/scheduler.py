"""FairScheduler: guardrail work on a few threads, shared fairly between tenants.

A job is a function that may be a generator: each ``yield`` marks a point (between two
chunks of text, a few milliseconds apart) where the job can be paused for another
tenant's work or dropped because its caller stopped waiting. Python cannot stop a
thread, but a job that yields can be stopped at its next yield:

- **cancellation**: when the future a request awaits is cancelled (its budget ran
  out in ``asyncio.wait_for``, or the client went away), the job is dropped from the
  queue, or, if it is running, stops at its next yield; its thread is free again;
- **turns**: the threads serve tenants in rotation, one step at a time; a tenant's own
  jobs run in arrival order (its oldest first), so one tenant's large or numerous
  requests delay another tenant's by about a step;
- **thread share**: while other tenants are active (work in flight, or submitted in the
  last `SHARE_WINDOW_S`), a tenant runs on at most all threads but one, so a step that
  does not end (a pathological input, a hung library call) cannot take every thread;
  alone, a tenant uses them all;
- **in-flight cap**: a tenant may have at most `max_in_flight` jobs queued or running;
  more fail at once with `TenantBusy`, and the guardrail's fail policy decides.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

_PAUSED = object()
# How long a tenant counts as active after its last job was submitted.
SHARE_WINDOW_S = 5.0


class TenantBusy(RuntimeError):
    """The tenant already has `max_in_flight` jobs queued or running here."""


class _Job:
    __slots__ = ("tenant", "fn", "args", "future", "loop", "gen", "cancelled")

    def __init__(self, tenant: str, fn: Callable[..., Any], args: tuple, future: asyncio.Future,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.tenant = tenant
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop
        self.gen: Any = None
        self.cancelled = False


class FairScheduler:
    def __init__(self, threads: int, max_in_flight: int, name: str) -> None:
        self.max_in_flight = max_in_flight
        self._cond = threading.Condition()
        self._ready: dict[str, deque[_Job]] = {}   # tenant -> its jobs waiting for a step
        self._turns: deque[str] = deque()          # tenants with waiting jobs, in serving order
        self._in_flight: dict[str, int] = {}       # tenant -> jobs queued or running
        self._running: dict[str, int] = {}         # tenant -> jobs on a thread now
        self._last_seen: dict[str, float] = {}     # tenant -> monotonic time of its last submit
        self._share = max(1, threads - 1)
        self._closed = False
        self.steps = 0                             # steps run, for tests and benchmarks
        # Started on first use, in the process that uses them (never inherited by a fork).
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        self._started = False

    @property
    def running(self) -> int:
        """Jobs a thread is working on right now."""
        with self._cond:
            return sum(self._running.values())

    def in_flight(self, tenant: str | None = None) -> int:
        """Jobs queued or running, of one tenant or of all."""
        with self._cond:
            if tenant is not None:
                return self._in_flight.get(tenant, 0)
            return sum(self._in_flight.values())

    def submit(self, tenant: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` (to the end, if it returns a generator) for `tenant`.

        Returns a future of the running loop; cancel it to stop the job. Never raises:
        a refused job is a future that failed with `TenantBusy`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = _Job(tenant, fn, args, future, loop)
        with self._cond:
            if self._closed:
                future.set_exception(RuntimeError("the guardrail threads are shut down"))
                return future
            self._last_seen[tenant] = time.monotonic()
            count = self._in_flight.get(tenant, 0)
            if count >= self.max_in_flight:
                future.set_exception(TenantBusy(
                    f"this tenant already has {count} requests in this guardrail (tenant_max_in_flight)"))
                return future
            self._in_flight[tenant] = count + 1
            self._enqueue(job, front=False)
            self._cond.notify()
            if not self._started:
                self._started = True
                for thread in self._threads:
                    thread.start()
        future.add_done_callback(lambda f: self._abandon(job) if f.cancelled() else None)
        return future

    def shutdown(self) -> None:
        """Stop the threads after their current step; queued jobs never run."""
        with self._cond:
            self._closed = True
            dropped = [job for jobs in self._ready.values() for job in jobs]
            self._ready.clear()
            self._turns.clear()
            self._cond.notify_all()
        for job in dropped:
            _deliver(job, None, RuntimeError("the guardrail threads are shut down"))

    # -- under self._cond ------------------------------------------------------------

    def _enqueue(self, job: _Job, front: bool) -> None:
        jobs = self._ready.get(job.tenant)
        if jobs is None:
            jobs = self._ready[job.tenant] = deque()
            self._turns.append(job.tenant)
        if front:
            jobs.appendleft(job)
        else:
            jobs.append(job)

    def _may_run(self, tenant: str, now: float) -> bool:
        """Under its thread share, or no other tenant active: this tenant may take a thread."""
        if self._running.get(tenant, 0) < self._share:
            return True
        for other, seen in list(self._last_seen.items()):
            if other == tenant:
                continue
            if self._in_flight.get(other):
                return False
            if now - seen < SHARE_WINDOW_S:
                return False
            del self._last_seen[other]                # inactive: forget it
        return True

    def _take(self) -> _Job | None:
        """The next job to step: the first tenant in turn that may take a thread."""
        now = time.monotonic()
        for _ in range(len(self._turns)):
            tenant = self._turns[0]
            if not self._may_run(tenant, now):
                self._turns.rotate(-1)
                continue
            self._turns.popleft()
            jobs = self._ready[tenant]
            job = jobs.popleft()
            if jobs:
                self._turns.append(tenant)
            else:
                del self._ready[tenant]
            self._running[tenant] = self._running.get(tenant, 0) + 1
            return job
        return None

    def _stopped(self, job: _Job) -> None:
        """The job left its thread (paused, finished or dropped)."""
        left = self._running[job.tenant] - 1
        if left:
            self._running[job.tenant] = left
        else:
            del self._running[job.tenant]
        self._cond.notify()        # a tenant held back by its share may take this thread

    def _release(self, job: _Job) -> None:
        left = self._in_flight[job.tenant] - 1
        if left:
            self._in_flight[job.tenant] = left
        else:
            del self._in_flight[job.tenant]

    # -- cancellation (event loop thread) ---------------------------------------------

    def _abandon(self, job: _Job) -> None:
        with self._cond:
            job.cancelled = True
            jobs = self._ready.get(job.tenant)
            if jobs is None or job not in jobs:
                return        # running: it stops at its next yield; or already finished
            jobs.remove(job)
            if not jobs:
                del self._ready[job.tenant]
                self._turns.remove(job.tenant)
            self._release(job)

    # -- worker threads --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    job = self._take() if self._turns else None
                    if job is not None:
                        break
                    # Jobs held back by the thread share wait for a thread to free up, or
                    # for the other tenants to go quiet.
                    self._cond.wait(timeout=SHARE_WINDOW_S if self._turns else None)
            while True:
                value, error = _step(job)
                with self._cond:
                    self.steps += 1
                    if value is _PAUSED and not job.cancelled and not self._closed:
                        if not self._turns:
                            continue          # nobody else waits: keep this thread on this job
                        self._stopped(job)
                        self._enqueue(job, front=True)
                        job = None
                    else:
                        self._stopped(job)
                        self._release(job)
                    break
            if job is not None:
                if value is _PAUSED:
                    job.gen.close()           # abandoned between two chunks: its answer is not wanted
                else:
                    _deliver(job, value, error)


def _step(job: _Job) -> tuple[Any, BaseException | None]:
    """Run the job to its next yield (_PAUSED) or to its end (its value, or its error)."""
    try:
        if job.gen is None:
            out = job.fn(*job.args)
            if not inspect.isgenerator(out):
                return out, None
            job.gen = out
        job.gen.send(None)
        return _PAUSED, None
    except StopIteration as stop:
        return stop.value, None
    except BaseException as exc:  # noqa: BLE001 - delivered to the waiting request
        return None, exc


def _deliver(job: _Job, value: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:      # the loop is closed: nobody is waiting any more
        pass
