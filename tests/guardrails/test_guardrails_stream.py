"""Output guardrails on streams: bounded hold-back, split placeholders, cut on violation."""

from __future__ import annotations

from guardrails import GuardrailEngine, OutputScanner

EMAIL = "jane.doe@example.com"


async def _masked(engine: GuardrailEngine, tenant: str):
    policy = engine.policy_for(tenant, "m")
    outcome = await engine.check_input(policy, [f"My mail is {EMAIL}, my phone 212-555-0199"])
    assert outcome.restorer is not None
    return policy, outcome.restorer


async def _run(scanner: OutputScanner, chunks: list[str]) -> tuple[str, list[str]]:
    emitted: list[str] = []
    for chunk in chunks:
        step = await scanner.feed(chunk)
        assert step.violation is None
        emitted.append(step.emit)
    final = await scanner.finish()
    assert final.violation is None
    emitted.append(final.emit)
    return "".join(emitted), emitted


async def test_placeholder_split_across_chunks_is_restored(engine: GuardrailEngine) -> None:
    policy, restorer = await _masked(engine, "mask_no_output")
    scanner = engine.output_scanner(policy, restorer)
    assert scanner is not None
    text, steps = await _run(scanner, ["Sure, I'll write to <EMAIL_", "ADDRESS_1> and", " call <PHONE_NUM", "BER_1> today."])
    assert text == f"Sure, I'll write to {EMAIL} and call 212-555-0199 today."
    # Only the unfinished placeholder was held back.
    assert steps[0] == "Sure, I'll write to "


async def test_restore_only_holds_back_at_most_one_placeholder(engine: GuardrailEngine) -> None:
    policy, restorer = await _masked(engine, "mask_no_output")
    scanner = engine.output_scanner(policy, restorer)
    assert scanner is not None
    answer = "Reply to <EMAIL_ADDRESS_1> before noon, or phone <PHONE_NUMBER_1>. Thanks!"
    fed = ""
    out = ""
    for ch in answer:  # one character per chunk: the worst case for splitting
        fed += ch
        out += (await scanner.feed(ch)).emit
        # What is still held is at most an unfinished placeholder.
        held = len(restorer.restore(fed)) - len(out)
        assert 0 <= held < restorer.max_placeholder_len
    out += (await scanner.finish()).emit
    assert out == restorer.restore(answer)


async def test_stream_output_pii_is_redacted_even_when_split(engine: GuardrailEngine) -> None:
    policy, restorer = await _masked(engine, "mask")
    scanner = engine.output_scanner(policy, restorer)
    assert scanner is not None
    chunks = ["Noted <EMAIL_ADDRESS_1>. Ask my colleague at al", "ice.w", "@corp.exa", "mple.org about it; ", "she is in all week long, ", "see you soon."]
    text, steps = await _run(scanner, chunks)
    assert text == f"Noted {EMAIL}. Ask my colleague at <EMAIL_ADDRESS> about it; she is in all week long, see you soon."
    assert not any("ice" in s or "corp" in s for s in steps)
    assert scanner.results[0].entity_counts == {"EMAIL_ADDRESS": 1}
    assert scanner.redacted


async def test_stream_hold_back_is_bounded_by_the_window(engine: GuardrailEngine) -> None:
    policy, restorer = await _masked(engine, "mask")
    scanner = engine.output_scanner(policy, restorer)
    assert scanner is not None
    window = policy.pii.stream_window_chars
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 6).split(" ")
    fed = emitted = 0
    for word in words:
        fed += len(word) + 1
        emitted += len((await scanner.feed(word + " ")).emit)
        # window + one release step + the longest word cut at a boundary
        assert fed - emitted <= window + 16 + 12
    emitted += len((await scanner.finish()).emit)
    assert emitted == fed


async def test_stream_output_block_cuts_the_stream(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("out_block", "m")
    scanner = engine.output_scanner(policy, None)
    assert scanner is not None
    first = await scanner.feed("Here is the number you asked for: 212-")
    assert first.violation is None and "212" not in first.emit
    step = await scanner.feed("555-0199. It is the main office line and it is staffed all day.")
    if step.violation is None:
        step = await scanner.finish()
    assert step.violation is not None and step.violation.code == "pii_detected"
    assert "212" not in step.emit
    assert (await scanner.feed("more text")).emit == ""


async def test_stream_toxicity_block_and_flag(engine: GuardrailEngine) -> None:
    blocked = engine.output_scanner(engine.policy_for("tox_out_only", "m"), None)
    assert blocked is not None
    step = await blocked.feed("You are wrong. ")
    step = step if step.violation else await blocked.finish()
    assert step.violation is not None and step.violation.kinds == ("insult",)
    assert step.emit == ""

    flagged = engine.output_scanner(engine.policy_for("tox_flag", "m"), None)
    assert flagged is not None
    text, _ = await _run(flagged, ["First sentence. ", "Second one."])
    assert text == "First sentence. Second one."
    assert flagged.results[0].action == "flag"


async def test_no_scanner_when_nothing_watches_the_output(engine: GuardrailEngine) -> None:
    assert engine.output_scanner(engine.policy_for("inj", "m"), None) is None
    assert engine.output_scanner(None, None) is None


async def test_a_stream_that_failed_open_waits_the_budget_once(engine: GuardrailEngine, monkeypatch) -> None:
    """Fail open on the output of a stream: after the first scan runs out of budget, the rest
    of the answer passes unscanned at once, instead of waiting the budget again per window."""
    import time

    from guardrails import checks
    from guardrails.pii import PiiScan

    calls: list[float] = []

    def slow_scan(*args, **kwargs):                       # a scheduler job, like pii_scan_job
        calls.append(time.monotonic())
        time.sleep(0.05)                                  # far over the policy's 1 ms budget
        yield
        return PiiScan([])

    monkeypatch.setattr(checks, "pii_scan_job", slow_scan)
    policy = engine.policy_for("slow_open", "m")
    scanner = engine.output_scanner(policy, None)
    assert scanner is not None
    words = [f"word{i} " for i in range(400)]             # many release windows
    text, _ = await _run(scanner, words)
    assert text == "".join(words)                          # everything released, unscanned
    assert len(calls) == 1
    [pii] = [r for r in scanner.results if r.name == "pii"]
    assert pii.action == "error"
