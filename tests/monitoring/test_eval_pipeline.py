"""The evaluators end to end: a real gateway (telemetry on the session's chDB) in front of
a mock provider of its own, scripted per upstream model; the evaluators read the traces
back, call the gateway with the evaluator key, and write `evaluations`."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from monitoring.config import MonitoringConfig
from monitoring.evaluators.run import Evaluators
from monitoring.runner import run_once
from tests.gateway_server import start_gateway
from tests.mock_server import start_mock

UPSTREAM_KEY = "sk-eval-upstream-secret"
USER_KEY = "sk-eval-user-secret"
CAPPED_KEY = "sk-eval-capped-secret"
EVALUATOR_KEY = "sk-eval-monitor-secret"
CONTEXT = ("Lake Baikal in Siberia is the deepest lake in the world, reaching 1,642 metres. It holds about 23% "
           "of the world's fresh surface water. The lake is fed by more than 300 rivers, while only one, the "
           "Angara, flows out of it.")
SCRIPT = [
    {"model": "m-good", "text": "Lake Baikal reaches a depth of 1,642 metres. It holds about 23% of the world's "
                                "fresh surface water."},
    {"model": "m-bad", "text": "Lake Baikal is a shallow lake of about 40 metres in Kazakhstan. It is fed by "
                               "two rivers from the Alps."},
    {"model": "m-stable", "text": "The Treaty of Westphalia was signed in 1648 in Osnabrück and Münster. "
                                  "It ended the Thirty Years' War."},
    {"model": "m-random", "texts": [
        "The Treaty of Westphalia was signed in 1712 in Utrecht. It ended the War of the Spanish Succession.",
        "It was signed in 1598 in Nantes by Henry IV. It granted rights to the Huguenots.",
        "The treaty dates from 1815 and was agreed at the Congress of Vienna after Napoleon's defeat.",
        "Signed in 1919 at Versailles, it imposed reparations on Germany after the First World War.",
        "The treaty was concluded in 1494 at Tordesillas and divided the New World between Spain and Portugal.",
        "In 1555 the Peace of Augsburg let each prince choose the religion of his lands."]},
    {"model": "j-garbage", "text": "I think the answer is quite good overall, maybe an eight."},
    {"model": "j-biased", "text": '{"winner": "A", "critique": "Answer A reads better."}'},
]
MODELS = {"grounded": "m-good", "invented": "m-bad", "stable": "m-stable", "random": "m-random",
          "judge-garbage": "j-garbage", "judge-biased": "j-biased", "gpt": "m1", "judged": "m1"}
_n = itertools.count()


@pytest.fixture(scope="module")
def mock():
    url, stop = start_mock(api_key=UPSTREAM_KEY)
    httpx.post(f"{url}/_mock/script", json=SCRIPT).raise_for_status()
    yield url
    stop()


@pytest.fixture(scope="module")
def gateway(mock, chdb_url, ch, tmp_path_factory):
    database = f"eval_pipeline_{next(_n)}"
    gw = start_gateway({
        "data_dir": str(tmp_path_factory.mktemp("eval-data")),
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread"},
        "cache": {"enabled": True, "default": {"mode": "exact"}},
        "keys": [{"key": USER_KEY, "tenant": "team-a"}, {"key": CAPPED_KEY, "tenant": "capped"}],
        "limits": {"tenants": {"capped": {"limits": {"rpm": 1}}, "sluice-evaluator": {"limits": {"rpm": 1}}}},
        "providers": {"mock": {"type": "openai", "base_url": f"{mock}/v1", "api_key": UPSTREAM_KEY}},
        "models": {name: {"deployments": [{"provider": "mock", "model": upstream}]}
                   for name, upstream in MODELS.items()},
        "monitoring": {"evaluator_key": EVALUATOR_KEY},
    })
    gw.database = database
    yield gw
    gw.stop()
    ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def _chat(gw, model: str, content: str, *, key: str = USER_KEY, **extra) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": content}], **extra}, timeout=30)


def _flush(gw) -> None:
    assert gw.gateway.telemetry.flush(timeout_s=10)


def _cfg(gw, **evaluators) -> MonitoringConfig:
    base = {"enabled": True, "gateway_url": gw.url, "settle_s": 0, "grounding": {"enabled": False}}
    return MonitoringConfig(evaluator_key=EVALUATOR_KEY, evaluators={**base, **evaluators})


def _rows(ch, gw, evaluator: str) -> list[dict]:
    result = ch.query(f"SELECT * FROM `{gw.database}`.evaluations WHERE evaluator = {{e:String}} ORDER BY ts",
                      parameters={"e": evaluator})
    return list(result.named_results())


def _user_requests(ch, gw, model: str) -> dict[str, dict]:
    result = ch.query(f"SELECT request_id, trace_id, span_id, traffic FROM `{gw.database}`.llm_requests "
                      f"WHERE public_model = {{m:String}}", parameters={"m": model})
    return {r["request_id"]: r for r in result.named_results()}


def test_grounding_scores_sampled_requests_only_with_linked_spans_and_a_rate_cap(gateway, ch, embedder):
    for i in range(12):
        for model in ("grounded", "invented"):
            assert _chat(gateway, model, f"<context>{CONTEXT}</context>\nHow deep is Lake Baikal? ({i})"
                         ).status_code == 200
    for i in range(3):                          # no context: nothing to ground in
        assert _chat(gateway, "grounded", f"How deep is Lake Baikal, roughly? ({i})").status_code == 200
    for i in range(4):                          # the monitor's own calls are never evaluated
        assert _chat(gateway, "grounded", f"<context>{CONTEXT}</context>\nDepth? ({i})",
                     key=EVALUATOR_KEY).status_code == 200
    _flush(gateway)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    cfg = _cfg(gateway, grounding={"sample": {"rate": 0.5, "models": {"invented": 1.0}}, "max_per_minute": 1000})
    run = Evaluators(cfg, embedder=embedder, tracer=provider.get_tracer("test")).run(ch, gateway.database)
    rows = _rows(ch, gateway, "grounding")
    assert len(rows) == run.outcomes[0].written == len(run.rows)
    requests = {**_user_requests(ch, gateway, "grounded"), **_user_requests(ch, gateway, "invented")}
    by_model = {"grounded": [r for r in rows if r["public_model"] == "grounded"],
                "invented": [r for r in rows if r["public_model"] == "invented"]}
    # invented is sampled at 1.0: all 12; grounded at 0.5, from a hash of the request id:
    # some but not all of the 12 with context; never the 3 without, never evaluator traffic
    assert len(by_model["invented"]) == 12
    assert 0 < len(by_model["grounded"]) < 12
    assert all(requests[r["request_id"]]["traffic"] == "user" for r in rows)
    sampled_again = ch.query(
        f"SELECT count() FROM `{gateway.database}`.llm_requests WHERE public_model = 'grounded' AND traffic = 'user' "
        f"AND position(prompt_text, '<context>') > 0 AND cityHash64(request_id) % 1000000 < 500000").result_rows[0][0]
    assert len(by_model["grounded"]) == sampled_again

    # a grounded answer scores high, an invented one low, its sentences stored
    assert all(r["score"] >= 0.7 and r["label"] == "supported" for r in by_model["grounded"])
    assert all(r["score"] < 0.3 and r["label"] == "unsupported" for r in by_model["invented"])
    details = json.loads(by_model["invented"][0]["details"])
    assert any("Kazakhstan" in s["sentence"] for s in details["unsupported"])
    assert details["context_sources"] == ["tag:context"]

    # one span per evaluation, linked to (not a child of) the evaluated request's span
    finished = [s for s in spans.get_finished_spans() if s.name == "sluice.evaluate"]
    assert len(finished) == len(rows)
    for span in finished:
        request = requests[span.attributes["sluice.evaluated.request_id"]]
        (link,) = span.links
        assert format(link.context.trace_id, "032x") == request["trace_id"]
        assert format(link.context.span_id, "016x") == request["span_id"]
        assert format(span.context.trace_id, "032x") != request["trace_id"] and span.parent is None

    # nothing left to do: a second run writes nothing
    assert Evaluators(cfg, embedder=embedder).run(ch, gateway.database).rows == []

    # max_per_minute holds within a run and across runs (read back from the table)
    capped = _cfg(gateway, grounding={"sample": {"rate": 1.0}, "max_per_minute": 5, "threshold": 0.55})
    first = Evaluators(capped, embedder=embedder).run(ch, gateway.database).outcomes[0]
    second = Evaluators(capped, embedder=embedder).run(ch, gateway.database).outcomes[0]
    assert (first.written, first.rate_capped) == (5, True)
    assert (second.written, second.rate_capped) == (0, True)


def test_evaluator_traffic_is_neither_cached_nor_limited_nor_user_traffic(gateway, mock, ch):
    before = len(httpx.get(f"{mock}/_mock/requests").json())
    evaluator = [_chat(gateway, "gpt", "What is the capital of France?", key=EVALUATOR_KEY) for _ in range(3)]
    user = [_chat(gateway, "gpt", "What is the capital of France?") for _ in range(2)]
    capped = [_chat(gateway, "gpt", f"Capped {i}", key=CAPPED_KEY) for i in range(2)]
    # the tenant sluice-evaluator has rpm 1 too, like "capped": only the evaluator key passes
    assert [r.status_code for r in evaluator] == [200, 200, 200]
    assert [r.status_code for r in capped] == [200, 429]
    assert [r.headers.get("x-sluice-cache") for r in evaluator] == ["bypass"] * 3
    assert [r.headers.get("x-sluice-cache") for r in user] == ["miss", "hit"]
    assert len(httpx.get(f"{mock}/_mock/requests").json()) - before == 3 + 1 + 1     # no evaluator call cached
    _flush(gateway)
    rows = ch.query(f"SELECT tenant, traffic, cache_status, count() FROM `{gateway.database}`.llm_requests "
                    f"WHERE prompt_text = 'user: What is the capital of France?' GROUP BY ALL ORDER BY ALL").result_rows
    assert rows == [("sluice-evaluator", "evaluator", "bypass", 3), ("team-a", "user", "hit", 1),
                    ("team-a", "user", "miss", 1)]

    # the drift run and the usage report see user traffic only
    drift = run_once(ch, gateway.database, MonitoringConfig(window_s=600, baseline_s=600, min_samples=1))
    assert drift.metrics and all(r.tenant != "sluice-evaluator" for r in drift.metrics)
    report = gateway.gateway.telemetry.report("1h", "tenant")
    assert "team-a" in report and "sluice-evaluator" not in report


def test_self_consistency_separates_a_stable_model_from_a_randomised_one_within_its_budget(gateway, mock, ch,
                                                                                              embedder):
    question = "When and where was the Treaty of Westphalia signed?"
    for i in range(4):
        for model in ("stable", "random"):
            assert _chat(gateway, model, f"{question} ({i})").status_code == 200
    _flush(gateway)
    before = len(httpx.get(f"{mock}/_mock/requests").json())
    cfg = _cfg(gateway, consistency={"enabled": True, "sample": {"rate": 0.0, "models": {"stable": 1.0, "random": 1.0}},
                                     "max_per_minute": 100, "daily_budget_usd": 0})
    assert Evaluators(cfg, embedder=embedder).run(ch, gateway.database).rows == []     # no budget: no call
    assert len(httpx.get(f"{mock}/_mock/requests").json()) == before

    cfg = _cfg(gateway, consistency={"enabled": True, "sample": {"rate": 0.0, "models": {"stable": 1.0, "random": 1.0}},
                                     "max_per_minute": 100, "samples": 3})
    run = Evaluators(cfg, embedder=embedder).run(ch, gateway.database)
    rows = _rows(ch, gateway, "self_consistency")
    stable = [r["score"] for r in rows if r["public_model"] == "stable"]
    randomised = [r["score"] for r in rows if r["public_model"] == "random"]
    assert len(stable) == len(randomised) == 4
    # a randomised model repeats the original answer by chance (one of six texts): a sample
    # that does agrees fully, so single scores vary, but the two never overlap
    assert min(stable) > 0.9 and sum(randomised) / 4 < 0.4 and max(randomised) < min(stable), (stable, randomised)
    assert len(httpx.get(f"{mock}/_mock/requests").json()) - before == 8 * 3          # N re-asks each
    assert run.outcomes[0].cost_usd == 0.0                                          # m-* are unpriced

    # a daily budget: priced re-asks stop once it is spent (overshoot: one evaluation at most)
    for i in range(4):
        assert _chat(gateway, "random", f"{question} (priced {i})").status_code == 200
    _flush(gateway)
    priced = _cfg(gateway, prices={"random": {"input": 10_000, "output": 10_000}},
                  consistency={"enabled": True, "sample": {"rate": 0.0, "models": {"stable": 1.0, "random": 1.0}},
                               "max_per_minute": 100, "samples": 3, "daily_budget_usd": 0.5})
    outcome = Evaluators(priced, embedder=embedder).run(ch, gateway.database).outcomes[0]
    assert outcome.budget_capped and outcome.written == 1
    spent = ch.query(f"SELECT sum(cost_usd) FROM `{gateway.database}`.evaluations "
                     f"WHERE evaluator = 'self_consistency'").result_rows[0][0]
    assert 0.5 <= spent == pytest.approx(outcome.cost_usd)
    again = Evaluators(priced, embedder=embedder).run(ch, gateway.database).outcomes[0]
    assert again.budget_capped and again.written == 0                               # the day's budget is read back


def test_judge_errors_on_malformed_output_after_one_retry_and_pairwise_ties_a_position_bias(gateway, mock, ch):
    assert _chat(gateway, "judged", "Name a prime number.").status_code == 200
    _flush(gateway)
    before = len(httpx.get(f"{mock}/_mock/requests").json())
    cfg = _cfg(gateway, judge={"enabled": True, "model": "judge-garbage",
                               "sample": {"rate": 0.0, "models": {"judged": 1.0}},
                               "max_per_minute": 100})
    Evaluators(cfg).run(ch, gateway.database)
    (row,) = _rows(ch, gateway, "judge")
    assert row["label"] == "error" and row["score"] is None
    assert "after one retry" in json.loads(row["details"])["error"]
    calls = httpx.get(f"{mock}/_mock/requests").json()[before:]
    assert [c.get("body", c).get("model") for c in calls][-2:] == ["j-garbage", "j-garbage"]

    pairwise = _cfg(gateway, judge={"enabled": True, "model": "judge-biased", "mode": "pairwise",
                                    "reference_model": "stable", "sample": {"rate": 0.0, "models": {"judged": 1.0}},
                                    "max_per_minute": 100})
    before = len(httpx.get(f"{mock}/_mock/requests").json())
    Evaluators(pairwise).run(ch, gateway.database)
    calls = [c.get("body", c) for c in httpx.get(f"{mock}/_mock/requests").json()[before:]]
    judged = [c["messages"][-1]["content"] for c in calls if c.get("model") == "j-biased"]
    original = ch.query(f"SELECT completion_text FROM `{gateway.database}`.llm_requests WHERE public_model = 'judged' "
                        f"AND prompt_text = 'user: Name a prime number.'").result_rows[0][0]
    reference = SCRIPT[2]["text"]
    # both orders: the evaluated answer first as A, then as B
    assert len(judged) == 2
    assert judged[0].index(original) < judged[0].index(reference)
    assert judged[1].index(reference) < judged[1].index(original)
    rows = [r for r in _rows(ch, gateway, "judge") if r["label"] != "error"]
    (row,) = rows
    details = json.loads(row["details"])
    assert (row["label"], row["score"]) == ("tie", 0.5)
    assert details["verdicts"] == ["A", "A"] and details["position_flip"] is True
    assert details["length_ratio"] == pytest.approx(len(original) / len(reference))


def test_assertions_check_every_answer_in_sql_and_python(gateway, ch):
    for i in range(3):
        assert _chat(gateway, "grounded", f"Assertion check {i}").status_code == 200
    _flush(gateway)
    cfg = _cfg(gateway, assertions=[
        {"name": "mentions-metres", "models": ["grounded"], "regex": "metres", "max_chars": 500},
        {"name": "json-object", "models": ["grounded"], "json_schema": {"type": "object"}},
        {"name": "english", "models": ["grounded"], "language": "en", "forbid_regex": "Kazakhstan"}])
    Evaluators(cfg).run(ch, gateway.database)
    metres, json_rows, english = (_rows(ch, gateway, f"assertion:{n}") for n in ("mentions-metres", "json-object",
                                                                                  "english"))
    assert metres and all(r["label"] == "pass" and r["score"] == 1.0 for r in metres)
    assert json_rows and all(r["label"] == "fail" and r["score"] == 0.0 for r in json_rows)
    assert json.loads(json_rows[0]["details"])["failed"] == [{"check": "json_schema", "error": "not JSON"}]
    assert english and all(r["label"] == "pass" for r in english)
    assert len(metres) == len(json_rows) == len(english)
