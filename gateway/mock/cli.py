"""Command line of the mock upstream: `python -m gateway.mock` (and `sluice mock-upstream`)."""

from __future__ import annotations

import argparse

from gateway.mock.options import MockOptions
from gateway.mock.server import run_mock_upstream


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock's flags, so the `sluice` CLI can mount them on its own sub-command."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before the response headers")
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="stream pacing (0 = no pacing)")
    parser.add_argument("--output-tokens", type=int, default=16, help="words in a generated answer")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--api-key", default=None, help="reject requests that do not carry this key")


def options_from_args(args: argparse.Namespace) -> MockOptions:
    return MockOptions(latency_ms=args.latency_ms, tokens_per_second=args.tokens_per_second,
                       output_tokens=args.output_tokens, embedding_dim=args.embedding_dim, api_key=args.api_key)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.mock",
        description="Mock LLM provider speaking the OpenAI, Azure and Anthropic wire formats.",
    )
    add_mock_arguments(parser)
    args = parser.parse_args(argv)
    run_mock_upstream(args.host, args.port, options_from_args(args))
