"""Rate limits, budgets and virtual keys (issue 22; docs/limits.md).

    config.py          LimitsConfig, AdminConfig, RateLimits, Budget (imported by gateway/config.py)
    model.py           QuotaSpec, Subject, Estimate, Decision, Reservation (plain values)
    scripts.py         the Lua scripts: reserve, settle, peek (one atomic call each)
    limiter.py         the Limiter contract; redis_limiter.py (shared) and local_limiter.py
    resp.py            the lean pipelined Redis connection the hot path uses
    estimate.py        token and cost estimates, and the settled figures
    headers.py         x-ratelimit-* / anthropic-ratelimit-* headers
    errors.py          429 / 503 refusals in the caller's format
    directory.py       virtual keys and tenant overrides in Redis, with short local caches
    records.py         the admin API's input and stored records
    service.py         QuotaService: the pipeline's admit / settle
    metrics.py, audit.py

Nothing is imported here: gateway.auth imports quota.model, and the service imports auth.
"""
