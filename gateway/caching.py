"""The cache steps of the pipeline: the gateway side of `cache.ResponseCache`.

The cache sits between the input guardrails and the provider: it is keyed by the
request as the provider would see it (masked placeholders included) and stores the
provider's answer in the caller's format before output guardrails, so a hit goes
through the same output restore/redaction as a fresh answer.
"""

from __future__ import annotations

import time

from cache import CacheLookup, CacheRequest, ResponseCache
from gateway.context import RequestContext
from gateway.http import header
from gateway.types import JSON, Operation, Scope


def cache_request(ctx: RequestContext, scope: Scope, body: JSON, policy_version: str) -> CacheRequest | None:
    if ctx.operation not in (Operation.CHAT, Operation.EMBEDDINGS):
        return None
    directive = header(scope, b"x-sluice-cache")
    return CacheRequest(tenant=ctx.principal.tenant, public_model=ctx.public_model,
                        api_format=ctx.api_format.value, operation=ctx.operation.value, body=body,
                        directive=directive.decode("latin-1") if directive else None,
                        policy_version=policy_version)


async def lookup(cache: ResponseCache, ctx: RequestContext, req: CacheRequest) -> CacheLookup:
    t0 = time.perf_counter()
    result = await cache.lookup(req)
    ctx.cache_status = result.status
    ctx.cache_similarity = result.similarity if result.status == "semantic-hit" else None
    ctx.prompt_embedding = result.embedding
    attrs = {"sluice.cache.status": result.status, "sluice.cache.embed_ms": result.embed_ms}
    if result.similarity is not None:
        attrs["sluice.cache.similarity"] = result.similarity
    ctx.steps.append(("sluice.cache.lookup", t0, time.perf_counter(), attrs))
    return result
