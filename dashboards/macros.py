"""What Grafana and the ClickHouse plugin do to a panel's SQL before ClickHouse sees it.

The renderer (`sluice dashboards render`) and the tests run the committed SQL through this
expander, so what they check is what Grafana would send. Three steps, in the order they
happen in Grafana:

1. the plugin's frontend: `$__conditionalAll(condition, $var)` becomes `1=1` when the
   variable is at "All", else the condition;
2. Grafana's template service: `${var:singlequote}` ('a','b'), `${var}` / `$var` (values
   joined by commas), and the built-ins `$__interval`, `$__rate_interval`, `$__range_s`;
3. the plugin's backend (pkg/macros/macros.go in grafana/clickhouse-datasource):
   `$__timeFilter(c)` -> `c >= toDateTime(FROM) AND c <= toDateTime(TO)` (Unix seconds),
   `$__timeFilter_ms(c)` with `fromUnixTimestamp64Milli`, `$__fromTime` / `$__toTime`
   (`toDateTime(s)`), `$__fromTime_ms` / `$__toTime_ms`, `$__dateFilter(c)`,
   `$__timeInterval(c)` -> `toStartOfInterval(toDateTime(c), INTERVAL N second)` and
   `$__interval_s` -> N, with N the panel interval in whole seconds (at least 1).

An unknown `$__` macro or an undefined variable raises `MacroError`: a typo fails a test
instead of reaching ClickHouse as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

ALL = "$__all"      # what Grafana stores as the value of a variable at "All"


class MacroError(ValueError):
    """A macro or variable the expander (and so Grafana) would not resolve."""


@dataclass(frozen=True, slots=True)
class QueryContext:
    """The dashboard state a query is expanded for: time range, interval, variables.
    A variable's value is a list of selected values, or `ALL`; `options` are the values
    "All" stands for where a query uses the variable outside `$__conditionalAll`."""

    time_from: datetime
    time_to: datetime
    interval_s: int = 60
    variables: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    options: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        if name not in self.variables:
            raise MacroError(f"undefined variable ${name}")
        value = self.variables[name]
        if value == ALL:
            return list(self.options.get(name, ()))
        return [value] if isinstance(value, str) else list(value)


def _seconds(t: datetime) -> int:
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp())


def _millis(t: datetime) -> int:
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def _args(sql: str, open_at: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose "(" is at `open_at` (nested
    parentheses and quoted strings kept whole), and the index after its ")"."""
    depth, quote, start, args = 0, "", open_at + 1, []
    for i in range(open_at, len(sql)):
        ch = sql[i]
        if quote:
            if ch == quote and sql[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return [a for a in args if a != ""] if args != [""] else [], i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise MacroError(f"unbalanced parentheses after {sql[max(0, open_at - 20):open_at]!r}")


def _conditional_all(sql: str, ctx: QueryContext) -> str:
    macro = "$__conditionalAll("
    while (at := sql.rfind(macro)) != -1:
        args, end = _args(sql, at + len(macro) - 1)
        if len(args) != 2:
            raise MacroError("$__conditionalAll takes (condition, $variable)")
        m = re.fullmatch(r"\$\{?(\w+)\}?", args[1])
        if m is None:
            raise MacroError(f"$__conditionalAll: second argument must be a plain $variable, got {args[1]!r}")
        if m.group(1) not in ctx.variables:
            raise MacroError(f"undefined variable ${m.group(1)}")
        chosen = "1=1" if ctx.variables[m.group(1)] == ALL else args[0]
        sql = sql[:at] + chosen + sql[end:]
    return sql


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")


def _template(sql: str, ctx: QueryContext) -> str:
    range_s = max(_seconds(ctx.time_to) - _seconds(ctx.time_from), 1)
    builtins = {"__interval": f"{ctx.interval_s}s", "__rate_interval": f"{max(ctx.interval_s * 4, 60)}s",
                "__range_s": str(range_s), "__range": f"{range_s}s"}
    for name, value in builtins.items():
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, sql)

    def replace(m: re.Match[str]) -> str:
        name, fmt = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), None)
        values = ctx.values(name)
        if fmt == "singlequote":
            return ",".join(_quote(v) for v in values) if values else "''"
        if fmt not in (None, "raw", "csv"):
            raise MacroError(f"variable format {fmt!r} is not used by these dashboards")
        return ",".join(values)
    return _VARIABLE.sub(replace, sql)


def _backend(sql: str, ctx: QueryContext) -> str:
    frm, to = ctx.time_from, ctx.time_to
    interval = max(int(ctx.interval_s), 1)

    def expand(name: str, args: list[str]) -> str:
        one = {"timeFilter", "timeFilter_ms", "dateFilter", "timeInterval", "timeInterval_ms"}
        if name in one and len(args) != 1:
            raise MacroError(f"$__{name} expects 1 argument, received {len(args)}")
        col = args[0] if args else ""
        match name:
            case "fromTime":
                return f"toDateTime({_seconds(frm)})"
            case "toTime":
                return f"toDateTime({_seconds(to)})"
            case "fromTime_ms":
                return f"fromUnixTimestamp64Milli({_millis(frm)})"
            case "toTime_ms":
                return f"fromUnixTimestamp64Milli({_millis(to)})"
            case "timeFilter":
                return f"{col} >= toDateTime({_seconds(frm)}) AND {col} <= toDateTime({_seconds(to)})"
            case "timeFilter_ms":
                return (f"{col} >= fromUnixTimestamp64Milli({_millis(frm)}) AND "
                        f"{col} <= fromUnixTimestamp64Milli({_millis(to)})")
            case "dateFilter":
                return (f"{col} >= toDate('{frm.strftime('%Y-%m-%d')}') AND "
                        f"{col} <= toDate('{to.strftime('%Y-%m-%d')}')")
            case "timeInterval":
                return f"toStartOfInterval(toDateTime({col}), INTERVAL {interval} second)"
            case "timeInterval_ms":
                return f"toStartOfInterval(toDateTime64({col}, 3), INTERVAL {interval * 1000} millisecond)"
            case "interval_s":
                return str(interval)
        raise MacroError(f"unknown macro $__{name}")

    out, pos = [], 0
    for m in re.finditer(r"\$__(\w+)", sql):
        if m.start() < pos:
            continue
        out.append(sql[pos:m.start()])
        name, end = m.group(1), m.end()
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            args, end = _args(sql, end)
        out.append(expand(name, args))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, ctx: QueryContext) -> str:
    """`sql` as the ClickHouse plugin would send it for this dashboard state."""
    return _backend(_template(_conditional_all(sql, ctx), ctx), ctx)


def variables_used(text: str) -> set[str]:
    """Names of the dashboard variables a query or expression refers to."""
    names = {m.group(1) or m.group(3) for m in _VARIABLE.finditer(text)}
    names |= set(re.findall(r"\$__conditionalAll\([^$]*\$\{?(\w+)", text))
    return names
