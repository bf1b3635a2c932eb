"""`sluice keys create|list|get|revoke|rotate`: the admin API (gateway/admin.py) for operators.

The master key is read from `$SLUICE_MASTER_KEY` (or `--master-key-file`), never from
the command line, where `ps` would show it. The new key's secret is printed once, by
`create` and `rotate`; nothing else ever prints a secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

MASTER_KEY_ENV = "SLUICE_MASTER_KEY"


def add_keys_command(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="virtual keys through the admin API (master key from $SLUICE_MASTER_KEY)")
    keys.add_argument("--gateway", default="http://127.0.0.1:8080", help="the gateway's base URL")
    keys.add_argument("--master-key-file", help="read the master key from this file instead of the environment")
    keys.add_argument("--json", action="store_true", help="print the API's JSON answers")
    actions = keys.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name")
    create.add_argument("--models", help="comma-separated public models (default: all)")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--max-parallel", type=int)
    create.add_argument("--budget-usd", type=float)
    create.add_argument("--budget-period", choices=["day", "month", "total"], default="month")
    create.add_argument("--expires-at", help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    create.add_argument("--metadata", help="a JSON object")

    actions.add_parser("list", help="every key (no secrets)")
    for name, text in (("get", "one key with its usage and spend"), ("revoke", "revoke a key everywhere"),
                       ("rotate", "new secret for a key (printed once); the old one is refused")):
        p = actions.add_parser(name, help=text)
        p.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)


def _master_key(args: argparse.Namespace) -> str:
    if args.master_key_file:
        return Path(args.master_key_file).read_text().strip()
    key = os.environ.get(MASTER_KEY_ENV, "")
    if not key:
        raise SystemExit(f"sluice keys: set ${MASTER_KEY_ENV} (or --master-key-file) to the gateway's admin.master_key")
    return key


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"tenant": args.tenant}
    if args.name:
        body["name"] = args.name
    if args.models:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    limits = {k: v for k, v in (("rpm", args.rpm), ("tpm", args.tpm), ("max_parallel", args.max_parallel))
              if v is not None}
    if limits:
        body["limits"] = limits
    if args.budget_usd is not None:
        body["budget"] = {"usd": args.budget_usd, "period": args.budget_period}
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.metadata:
        body["metadata"] = json.loads(args.metadata)
    return body


def cmd_keys(args: argparse.Namespace) -> int:
    import httpx

    try:
        actor = getpass.getuser()
    except Exception:
        actor = ""
    headers = {"Authorization": f"Bearer {_master_key(args)}", "x-sluice-actor": actor}
    base = args.gateway.rstrip("/") + "/admin/keys"
    requests = {
        "create": ("POST", base, _create_body(args) if args.action == "create" else None),
        "list": ("GET", base, None),
        "get": ("GET", f"{base}/{getattr(args, 'key_id', '')}", None),
        "revoke": ("DELETE", f"{base}/{getattr(args, 'key_id', '')}", None),
        "rotate": ("POST", f"{base}/{getattr(args, 'key_id', '')}/rotate", None),
    }
    method, url, body = requests[args.action]
    try:
        resp = httpx.request(method, url, json=body, headers=headers, timeout=30, trust_env=False)
    except httpx.TransportError as exc:
        print(f"sluice keys: cannot reach {args.gateway}: {exc}", file=sys.stderr)
        return 1
    answer = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code >= 400:
        message = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
        print(f"sluice keys: {resp.status_code}: {message or resp.text[:200]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if args.action in ("create", "rotate"):
        print(f"id:     {answer['id']}\ntenant: {answer['tenant']}\nkey:    {answer['key']}")
        print("The key is shown this once; Sluice keeps only its hash.", file=sys.stderr)
    elif args.action == "list":
        _table(answer["data"])
    elif args.action == "revoke":
        print(f"revoked {answer['id']} (refused by every replica within a second)")
    else:
        print(json.dumps(answer, indent=2))
    return 0


def _table(keys: list[dict[str, Any]]) -> None:
    header = ["id", "name", "tenant", "status", "source", "rpm", "tpm", "parallel", "budget"]
    rows = [header]
    for k in keys:
        limits = k.get("limits") or {}
        budget = k.get("budget")
        rows.append([k["id"], k.get("name") or "", k["tenant"], k.get("status", ""), k.get("source", ""),
                     str(limits.get("rpm") or "-"), str(limits.get("tpm") or "-"),
                     str(limits.get("max_parallel") or "-"),
                     f"${budget['usd']:g}/{budget['period']}" if budget else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
