"""Rate-limit headers, in the caller's dialect, from the limiter's decision.

OpenAI callers get `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
duration: `20ms`, `1.5s`, `6m0s`); Anthropic callers get
`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset as an RFC 3339
instant). They describe the subject closest to its limit (the key's or the tenant's),
per kind; a kind neither has a limit for is left out.

`reset` is when `remaining` next goes up: when the oldest request (or, for tokens, the
oldest reservation) in the window leaves it; while remaining is 0 that is exactly when
a request may pass again (the rate window is a sliding log, so this is not when the whole
window is empty, which is the literal reading of the providers' docs and never earlier).
A refusal adds `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.quota.model import REQ, REQ_RESET, TOK, TOK_RESET, Decision, SubjectSet

assert REQ_RESET == REQ + 1 and TOK_RESET == TOK + 1
from gateway.types import WireFormat


def duration(ms: int) -> str:
    """OpenAI's reset format: 20ms, 1s, 1.5s, 6m0s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    if ms < 60_000:
        whole, frac = divmod(ms, 1000)
        return f"{whole}s" if not frac else f"{whole}.{frac:03d}".rstrip("0") + "s"
    minutes, rest = divmod(ms, 60_000)
    whole, frac = divmod(rest, 1000)
    return f"{minutes}m{whole}s" if not frac else f"{minutes}m{whole}.{frac:03d}".rstrip("0") + "s"


def instant(now_ms: int, ms: int) -> str:
    return datetime.fromtimestamp((now_ms + max(ms, 0)) / 1000, timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")


_NAMES = {  # per dialect and kind: the limit, remaining and reset header names
    (False, REQ): (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", b"x-ratelimit-reset-requests"),
    (False, TOK): (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens"),
    (True, REQ): (b"anthropic-ratelimit-requests-limit", b"anthropic-ratelimit-requests-remaining",
                  b"anthropic-ratelimit-requests-reset"),
    (True, TOK): (b"anthropic-ratelimit-tokens-limit", b"anthropic-ratelimit-tokens-remaining",
                  b"anthropic-ratelimit-tokens-reset"),
}


def rate_headers(decision: Decision, subjects: SubjectSet, fmt: WireFormat) -> list[tuple[bytes, bytes]]:
    values = decision.values
    anthropic = fmt is WireFormat.ANTHROPIC
    out: list[tuple[bytes, bytes]] = []
    for used, at in ((REQ, subjects.rpm_at), (TOK, subjects.tpm_at)):
        if not at:
            continue
        off, limit = at[0]
        remaining = limit - values[off + used]
        for other, other_limit in at[1:]:               # the subject closest to its limit
            if other_limit - values[other + used] < remaining:
                off, limit, remaining = other, other_limit, other_limit - values[other + used]
        reset_ms = values[off + used + 1]               # REQ_RESET / TOK_RESET follow REQ / TOK
        limit_name, remaining_name, reset_name = _NAMES[anthropic, used]
        reset = instant(values[4], reset_ms) if anthropic else duration(reset_ms)
        out.append((limit_name, b"%d" % limit))
        out.append((remaining_name, b"%d" % (remaining if remaining > 0 else 0)))
        out.append((reset_name, reset.encode()))
    return out


def retry_headers(retry_ms: int) -> dict[str, str]:
    return {"retry-after": str(max(1, -(-retry_ms // 1000))), "retry-after-ms": str(max(retry_ms, 0))}
