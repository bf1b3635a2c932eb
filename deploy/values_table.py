"""The Helm chart's values table for README.md, generated from values.yaml and its schema.

Each row is a key of helm/sluice/values.yaml: its type (values.schema.json), its default
(values.yaml) and its description (the `# --` comment above it in values.yaml, else the
schema's `description`). `python deploy/values_table.py` prints the table;
tests/deploy/test_values_table.py fails when README.md's copy differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "sluice"
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z0-9_]*):")


def comments(values_text: str) -> dict[str, str]:
    """`# -- text` (and the `#` lines after it) above a key -> that key's dotted path."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        m = _KEY.match(line)
        if not m:
            if not stripped:
                pending = []
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        if pending:
            out[".".join(k for _, k in stack)] = " ".join(pending)
            pending = []
    return out


def _type(schema: dict) -> str:
    if "const" in schema:
        return f"const {json.dumps(schema['const'])}"
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type", "any")
    return " \\| ".join(t) if isinstance(t, list) else t


def _default(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return f"`{text if len(text) <= 60 else text[:57] + '...'}`"


def rows(schema: dict, values: dict, notes: dict[str, str], prefix: str = "") -> list[tuple[str, str, str, str]]:
    out = []
    for key, sub in schema.get("properties", {}).items():
        if key == "global":
            continue
        path = f"{prefix}{key}"
        value = values.get(key) if isinstance(values, dict) else None
        nested = sub.get("properties") and sub.get("additionalProperties") is False and path not in (
            "podSecurityContext", "securityContext", "resources", "monitor.resources", "migrations.resources",
            "probes", "serviceMonitor.bearerTokenSecret")
        if nested:
            out += rows(sub, value or {}, notes, f"{path}.")
            continue
        description = notes.get(path) or sub.get("description", "")
        out.append((path, _type(sub), _default(value), description.replace("|", "\\|")))
    return out


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in rows(schema, yaml.safe_load(text), comments(text))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
