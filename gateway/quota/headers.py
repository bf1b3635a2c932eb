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
    return duration_bytes(ms).decode()


_FRACTIONS = [b""] + [(b".%03d" % f).rstrip(b"0") for f in range(1, 1000)]   # ms -> ".5", ".123"


def duration_bytes(ms: int) -> bytes:
    if ms < 1000:
        return b"%dms" % (ms if ms > 0 else 0)
    if ms < 60_000:
        return b"%d%bs" % (ms // 1000, _FRACTIONS[ms % 1000])
    minutes, rest = divmod(ms, 60_000)
    return b"%dm%d%bs" % (minutes, rest // 1000, _FRACTIONS[rest % 1000])


def instant(now_ms: int, ms: int) -> str:
    return datetime.fromtimestamp((now_ms + max(ms, 0)) / 1000, timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")


# Per dialect, per kind (requests, tokens): the limit, remaining and reset header names.
_OPENAI = ((b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", b"x-ratelimit-reset-requests"),
           (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens"))
_ANTHROPIC = ((b"anthropic-ratelimit-requests-limit", b"anthropic-ratelimit-requests-remaining",
               b"anthropic-ratelimit-requests-reset"),
              (b"anthropic-ratelimit-tokens-limit", b"anthropic-ratelimit-tokens-remaining",
               b"anthropic-ratelimit-tokens-reset"))


def rate_headers(decision: Decision, subjects: SubjectSet, fmt: WireFormat) -> list[tuple[bytes, bytes]]:
    """Built for every answer: plain loops over the precomputed positions, bytes throughout
    (the limits' own digits formatted once per subject set, `SubjectSet.rpm_at`)."""
    values = decision.values
    anthropic = fmt is WireFormat.ANTHROPIC
    out: list[tuple[bytes, bytes]] = []
    for names, used, at in zip(_ANTHROPIC if anthropic else _OPENAI, (REQ, TOK), (subjects.rpm_at, subjects.tpm_at)):
        if not at:
            continue
        off, limit, limit_bytes = at[0]
        remaining = limit - values[off + used]
        for other, other_limit, other_bytes in at[1:]:  # the subject closest to its limit
            if other_limit - values[other + used] < remaining:
                off, limit_bytes, remaining = other, other_bytes, other_limit - values[other + used]
        reset_ms = values[off + used + 1]               # REQ_RESET / TOK_RESET follow REQ / TOK
        out += ((names[0], limit_bytes), (names[1], b"%d" % remaining if remaining > 0 else b"0"),
                (names[2], instant(values[4], reset_ms).encode() if anthropic else duration_bytes(reset_ms)))
    return out


def retry_headers(retry_ms: int) -> dict[str, str]:
    return {"retry-after": str(max(1, -(-retry_ms // 1000))), "retry-after-ms": str(max(retry_ms, 0))}
