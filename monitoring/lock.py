"""Who runs the monitor: one holder at a time among the gateway replicas (and workers).

A `MonitorLoop` runs only while it holds its lock, and keeps holding it (renewing) between
runs, so the same replica keeps computing (and exporting the gauges) until it stops or
dies; then the lock expires after its TTL and another replica takes over.

- `RedisLock`: across replicas. `SET key token NX PX ttl` takes it; a script that
  compares the token extends it (`PEXPIRE`) or deletes it, so a replica never extends or
  releases a lock that expired and went to someone else. Blocking redis-py calls: the
  loop's threads, never the event loop.
- `FileLock`: one host, no Redis (`sluice serve --workers N` on the embedded default):
  `flock` on a file in the data directory; the kernel releases it when the process dies.

A lock is `acquire() -> bool` (take it, or confirm this holder still has it), `renew() ->
bool` (still ours, extended) and `release()`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol

import redis

# KEYS[1] = lock key, ARGV[1] = token, ARGV[2] = ttl ms: extend only our own lock.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] = lock key, ARGV[1] = token: delete only our own lock.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

DEFAULT_LOCK_KEY = "sluice:monitor:lock"


class MonitorLock(Protocol):
    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


class RedisLock:
    """A lock with a TTL in Redis. Raises redis-py's errors when Redis does not answer
    (the loop logs them and treats the lock as not held)."""

    def __init__(self, url: str, *, ttl_s: float, key: str = DEFAULT_LOCK_KEY, timeout_s: float = 2.0) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._key = key
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._token = f"{os.getpid()}-{os.urandom(8).hex()}"     # this holder, never reused
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    def acquire(self) -> bool:
        if self._redis.set(self._key, self._token, nx=True, px=self._ttl_ms):
            return True
        return self.renew()                                     # already ours: extended

    def renew(self) -> bool:
        return bool(self._renew(keys=[self._key], args=[self._token, self._ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self._key], args=[self._token])

    def holder(self) -> str | None:
        """The token of whoever holds it now (tests, diagnostics)."""
        value = self._redis.get(self._key)
        return value.decode() if value is not None else None

    def close(self) -> None:
        self._redis.close()


class FileLock:
    """`flock` on `path`: one holder per host; released by the kernel if the process dies."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def renew(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
