"""Wire-format translation between OpenAI Chat Completions and Anthropic Messages.

Pure functions and per-request stream state machines: plain dicts in, plain
(orjson-ready) dicts out, no I/O. The gateway uses them when a caller's format differs
from the deployment's:

    OpenAI caller -> Anthropic deployment       Anthropic caller -> OpenAI-type deployment
      openai_request_to_anthropic                 anthropic_request_to_openai
      anthropic_response_to_openai                openai_response_to_anthropic
      AnthropicStreamToOpenAI                     OpenAIStreamToAnthropic

A request with no faithful form in the target format raises TranslationError (400).
"""

from gateway.translate.anthropic_to_openai import (
    anthropic_request_to_openai,
    anthropic_response_to_openai,
)
from gateway.translate.errors import (
    TranslationError,
    anthropic_error_to_openai,
    anthropic_error_type,
    openai_error_to_anthropic,
    openai_error_type,
)
from gateway.translate.openai_to_anthropic import (
    DEFAULT_MAX_TOKENS,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from gateway.translate.streams import AnthropicStreamToOpenAI, OpenAIStreamToAnthropic

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicStreamToOpenAI",
    "OpenAIStreamToAnthropic",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_error_type",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "openai_error_to_anthropic",
    "openai_error_type",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]
