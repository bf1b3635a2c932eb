"""The admin API: virtual keys and tenant limits, behind the master key (`admin.master_key`).

    POST   /admin/keys                  create a key: 201 {"id", "key", ...}; the key is shown once
    GET    /admin/keys                  every key (virtual and from sluice.yaml), no secrets
    GET    /admin/keys/{id}             one key, its usage this window, in flight, spend this period
    PATCH  /admin/keys/{id}             change name, models, limits, budget, expiry, metadata
    DELETE /admin/keys/{id}             revoke (refused by every replica within key_cache_s)
    POST   /admin/keys/{id}/rotate      a new secret; the old one is refused from then on
    GET    /admin/tenants               every tenant with limits (config and operator-set)
    GET    /admin/tenants/{name}        its limits, budget, usage and spend
    PUT    /admin/tenants/{name}        set its limits and budget (replaces limits.tenants' entry)
    PATCH  /admin/tenants/{name}        change some of them
    DELETE /admin/tenants/{name}        drop the operator's record (back to limits.tenants)

The master key comes as `Authorization: Bearer` or `x-api-key` and is compared with
hmac.compare_digest; without it: 401. Every action, refused ones included, is audited
(`admin_audit` in ClickHouse: who, what, when, never a secret). Plain ASGI endpoints, like
the others in app.py; answers are JSON, errors in OpenAI's shape.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.routing import Route

from gateway.errors import BadRequest, GatewayError, NotFound, Unauthorized
from gateway.http import header, parse_json_object, read_body, send_bytes
from gateway.quota.model import QuotaSpec
from gateway.quota.records import NAME_PATTERN, KeyCreate, KeyPatch, KeyRecord, TenantUpdate
from gateway.types import Receive, Scope, Send, WireFormat

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.runtime import Gateway

_MAX_BODY = 64 * 1024
_ACTOR_MAX = 64


class Conflict(GatewayError):
    status, type, code = 409, "invalid_request_error", "conflict"


class NotConfigured(GatewayError):
    status, type, code = 503, "service_unavailable", "admin_store_unavailable"


Handler = Callable[["AdminContext"], Awaitable[tuple[int, Any]]]   # -> (status, JSON body)


class AdminContext:
    """One admin request: who, the path parameters, the body, and what to audit."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.params: dict[str, str] = scope.get("path_params") or {}
        self.request_id = os.urandom(12).hex()
        name = (header(scope, b"x-sluice-actor") or b"").decode("latin-1").strip()[:_ACTOR_MAX]
        self.actor = "master" + (f":{''.join(c for c in name if c.isprintable())}" if name else "")
        self.client_ip = (scope.get("client") or ("",))[0] or ""
        self.target_id = self.params.get("key_id") or self.params.get("name") or ""
        self.tenant = self.params.get("name", "")
        self.detail: dict[str, Any] = {}

    async def body(self, model: type[BaseModel]) -> Any:
        raw = parse_json_object(await read_body(self.scope, self.receive, _MAX_BODY), 32)
        try:
            parsed = model.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadRequest(f"{where}: {first['msg']}", param=where) from None
        self.detail = {k: v for k, v in raw.items() if k in model.model_fields}
        return parsed


class AdminEndpoint:
    """One route of the admin API: checks the master key, runs the handler, audits."""

    def __init__(self, api: AdminAPI, target_type: str, handlers: dict[str, tuple[str, Handler]]) -> None:
        self._api = api
        self._target_type = target_type
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = AdminContext(scope, receive)
        name, handler = self._handlers.get(scope["method"]) or self._handlers["GET"]    # HEAD: as GET
        action = f"{self._target_type}.{name}"
        try:
            if not self._api.authorized(scope):
                raise Unauthorized("The admin API needs the master key: 'Authorization: Bearer <master key>' "
                                   "or 'x-api-key'")
            status, body = await handler(ctx)
        except GatewayError as err:
            status, out = err.status, err.body(WireFormat.OPENAI)
            if status == 401:
                ctx.actor = "unauthenticated"
            await send_bytes(send, status, out, [(b"x-sluice-request-id", ctx.request_id.encode()),
                                                 *((k.encode(), v.encode()) for k, v in err.headers.items())])
        except RedisError as exc:
            status = 503
            err = NotConfigured(f"The key store (Redis) is unavailable: {type(exc).__name__}")
            await send_bytes(send, status, err.body(WireFormat.OPENAI), [])
        else:
            await send_bytes(send, status, orjson.dumps(body), [(b"x-sluice-request-id", ctx.request_id.encode())])
        self._api.gw.quota.audit.record(
            request_id=ctx.request_id, actor=ctx.actor, client_ip=ctx.client_ip, action=action,
            target_type=self._target_type, target_id=ctx.target_id, tenant=ctx.tenant, status=status,
            detail=ctx.detail)


class AdminAPI:
    def __init__(self, gw: Gateway, master_key: str) -> None:
        self.gw = gw
        self._master = master_key.encode()
        self._quota = gw.quota

    def authorized(self, scope: Scope) -> bool:
        from gateway.auth import presented_key
        presented = presented_key(scope["headers"])
        return presented is not None and hmac.compare_digest(presented.encode(), self._master)

    # -- keys ------------------------------------------------------------------------------

    def _directory(self):
        if self._quota.keys is None:
            raise NotConfigured("Virtual keys need Redis: set limits.redis_url (or cache.redis_url)")
        return self._quota.keys

    def _check_models(self, models: list[str] | None) -> None:
        for m in models or ():
            if m not in self.gw.cfg.models:
                raise BadRequest(f"models: unknown model '{m}'", param="models")

    def _config_key(self, key_id: str) -> Principal | None:
        return next((p for p in self.gw.keys.configured() if p.quota_id == key_id), None)

    async def create_key(self, ctx: AdminContext) -> tuple[int, Any]:
        spec: KeyCreate = await ctx.body(KeyCreate)
        self._check_models(spec.models)
        record, secret = await self._directory().create(spec)
        ctx.target_id, ctx.tenant = record.id, record.tenant
        return 201, {"id": record.id, "key": secret, **record.public()}

    async def list_keys(self, ctx: AdminContext) -> tuple[int, Any]:
        out = [_config_key_json(p) for p in self.gw.keys.configured()]
        if self._quota.keys is not None:
            out += [r.public() for r in await self._quota.keys.all()]
        return 200, {"object": "list", "data": out}

    async def get_key(self, ctx: AdminContext) -> tuple[int, Any]:
        key_id = ctx.params["key_id"]
        principal = self._config_key(key_id)
        if principal is not None:
            ctx.tenant = principal.tenant
            return 200, {**_config_key_json(principal), **await self._usage("key", principal, principal.limits)}
        record = await self._record(key_id)
        ctx.tenant = record.tenant
        from gateway.quota.directory import principal_of
        p = principal_of(record)
        return 200, {**record.public(), **await self._usage("key", p, p.limits)}

    async def _record(self, key_id: str) -> KeyRecord:
        record = await self._directory().get(key_id)
        if record is None:
            raise NotFound(f"No key with id '{key_id}'")
        return record

    def _not_config(self, key_id: str) -> None:
        if self._config_key(key_id) is not None:
            raise Conflict(f"Key '{key_id}' is defined in sluice.yaml: change it there")

    async def patch_key(self, ctx: AdminContext) -> tuple[int, Any]:
        key_id = ctx.params["key_id"]
        self._not_config(key_id)
        patch: KeyPatch = await ctx.body(KeyPatch)
        if "models" in patch.model_fields_set:
            self._check_models(patch.models)
        record = await self._directory().patch(key_id, patch)
        if record is None:
            raise NotFound(f"No key with id '{key_id}'")
        ctx.tenant = record.tenant
        return 200, record.public()

    async def revoke_key(self, ctx: AdminContext) -> tuple[int, Any]:
        key_id = ctx.params["key_id"]
        self._not_config(key_id)
        record = await self._directory().revoke(key_id)
        if record is None:
            raise NotFound(f"No key with id '{key_id}'")
        ctx.tenant = record.tenant
        return 200, record.public()

    async def rotate_key(self, ctx: AdminContext) -> tuple[int, Any]:
        key_id = ctx.params["key_id"]
        self._not_config(key_id)
        found = await self._directory().rotate(key_id)
        if found is None:
            raise NotFound(f"No key with id '{key_id}'")
        record, secret = found
        ctx.tenant = record.tenant
        if not secret:
            raise Conflict(f"Key '{key_id}' is revoked")
        return 200, {"id": record.id, "key": secret, **record.public()}

    # -- tenants ---------------------------------------------------------------------------

    async def _tenant_json(self, name: str, with_usage: bool) -> dict[str, Any]:
        tenants = self._quota.tenants
        record = await tenants.record(name) if tenants.dynamic else None
        if record is not None:
            spec, source = QuotaSpec.build(record.limits, record.budget), "api"
        else:
            spec = tenants.configured(name)
            source = "config" if spec is not None else "none"
        out = {"name": name, "source": source, **(spec or QuotaSpec()).as_json()}
        if with_usage:
            from gateway.auth import Principal
            out.update(await self._usage("tenant", Principal(name, "", None), spec))
        return out

    async def list_tenants(self, ctx: AdminContext) -> tuple[int, Any]:
        names = await self._quota.tenants.names()
        return 200, {"object": "list", "data": [await self._tenant_json(n, False) for n in names]}

    async def get_tenant(self, ctx: AdminContext) -> tuple[int, Any]:
        return 200, await self._tenant_json(_tenant_name(ctx.params["name"]), True)

    async def put_tenant(self, ctx: AdminContext) -> tuple[int, Any]:
        name = _tenant_name(ctx.params["name"])
        if not self._quota.tenants.dynamic:
            raise NotConfigured("Tenant limits set through the API need Redis: set limits.redis_url")
        update: TenantUpdate = await ctx.body(TenantUpdate)
        if ctx.scope["method"] == "PATCH":
            current = await self._tenant_json(name, False)
            limits = {k: v for k, v in (current.get("limits") or {}).items() if v is not None}
            given = update.model_fields_set
            if "limits" in given:
                limits.update({k: getattr(update.limits, k) for k in update.limits.model_fields_set})
            budget = update.budget if "budget" in given else current.get("budget")
            update = TenantUpdate.model_validate({"limits": limits, "budget": budget})
        await self._quota.tenants.put(name, update)
        return 200, await self._tenant_json(name, False)

    async def delete_tenant(self, ctx: AdminContext) -> tuple[int, Any]:
        name = _tenant_name(ctx.params["name"])
        if not self._quota.tenants.dynamic:
            raise NotConfigured("Tenant limits set through the API need Redis: set limits.redis_url")
        deleted = await self._quota.tenants.delete(name)
        return 200, {"deleted": deleted, **await self._tenant_json(name, False)}

    # -- usage -----------------------------------------------------------------------------

    async def _usage(self, kind: str, p: Principal, spec: QuotaSpec | None) -> dict[str, Any]:
        """Counters of one subject: this window, in flight, spend this period."""
        return await self._quota.usage(kind, p, spec)


def _tenant_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise BadRequest(f"Invalid tenant name '{name[:64]}'")
    return name


def _config_key_json(p: Principal) -> dict[str, Any]:
    spec = p.limits or QuotaSpec()
    return {"id": p.quota_id, "tenant": p.tenant, "name": p.key_id, "models": sorted(p.models) if p.models else None,
            **spec.as_json(), "expires_at": None, "metadata": {}, "status": "active", "source": "config"}


def admin_routes(gw: Gateway) -> list[Route]:
    """The /admin/* routes, or none when no master key is configured (then they are 404)."""
    master = gw.cfg.admin.master_key
    if not master:
        return []
    api = AdminAPI(gw, master)

    def route(path: str, target: str, handlers: dict[str, tuple[str, Handler]]) -> Route:
        return Route(path, AdminEndpoint(api, target, handlers), methods=list(handlers))

    return [
        route("/admin/keys", "key", {"GET": ("list", api.list_keys), "POST": ("create", api.create_key)}),
        route("/admin/keys/{key_id}", "key", {"GET": ("read", api.get_key), "PATCH": ("update", api.patch_key),
                                              "DELETE": ("revoke", api.revoke_key)}),
        route("/admin/keys/{key_id}/rotate", "key", {"POST": ("rotate", api.rotate_key)}),
        route("/admin/tenants", "tenant", {"GET": ("list", api.list_tenants)}),
        route("/admin/tenants/{name}", "tenant", {"GET": ("read", api.get_tenant), "PUT": ("set", api.put_tenant),
                                                  "PATCH": ("update", api.put_tenant),
                                                  "DELETE": ("delete", api.delete_tenant)}),
    ]

