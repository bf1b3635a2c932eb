"""Reads the traces back: drift over `llm_requests` (and, later, evaluators and feedback).

Run by `sluice monitor run` in its own process, or inside `sluice serve` when
`monitoring.in_process` is on. Never imported by the request path; never imports gateway/.
"""
