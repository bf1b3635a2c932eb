"""Hallucination evaluators on sampled traffic (docs/monitoring.md, "Hallucination evaluators").

Run by the monitor job after the drift run (`job.run_monitor_job`); each evaluator reads
its sample of `llm_requests` back and writes one `evaluations` row per request. Importing
this package loads nothing heavy: models load on the first run that needs them.
"""
