"""``AnthropicModel``: structured reasoning with Claude through the official ``anthropic`` SDK.

- The output type's JSON Schema becomes the input schema of one tool, and the
  model is forced to call it: the tool's input is the structured output.
- The stable system prompt is marked for prompt caching.
- Usage, cache reads and cache writes included, goes back to the runtime,
  which prices it from the policy's table.
- Overloaded (529), rate-limited (429), server errors and timeouts are retried
  with exponential backoff up to ``max_attempts``; they cost no tokens. Then
  :class:`ModelUnavailable` is raised and the handoff is redelivered later.
- Output that does not fit the schema is the SDK's business: ``ctx.reason``
  reports it as ``invalid_tool_payload`` and asks for a repair.

Unless given, the name and limits come from the settings (``CLAIMCHECK_MODEL``,
``CLAIMCHECK_MODEL_MAX_TOKENS``, ``CLAIMCHECK_MODEL_TIMEOUT``,
``CLAIMCHECK_MODEL_MAX_ATTEMPTS``); the client reads ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL`` as usual.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import anthropic

from agents.model import ModelRequest, ModelResult
from bus.settings import Settings
from handoff_schemas import Usage

RETRYABLE = (
    anthropic.RateLimitError,
    anthropic.InternalServerError,  # includes 529 overloaded
    anthropic.APIConnectionError,  # includes timeouts
)


class ModelUnavailable(Exception):
    """The model did not answer after every allowed attempt."""


class AnthropicModel:
    def __init__(
        self,
        model: str | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        backoff_seconds: float = 1.0,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        settings = Settings()
        self.name = model or settings.model
        self.max_tokens = max_tokens or settings.model_max_tokens
        self.max_attempts = max_attempts or settings.model_max_attempts
        self.backoff_seconds = backoff_seconds
        self.client = client or anthropic.AsyncAnthropic(
            timeout=timeout or settings.model_timeout,
            max_retries=0,  # retries are ours: counted, backed off, and visible in logs
        )

    async def complete(self, request: ModelRequest) -> ModelResult:
        tool = request.output_type.__name__
        arguments: dict[str, Any] = {
            "model": self.name,
            "max_tokens": self.max_tokens,
            "system": [
                {"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": request.user_message()}],
            "tools": [
                {
                    "name": tool,
                    "description": f"Answer with a {tool}.",
                    "input_schema": request.output_type.model_json_schema(),
                }
            ],
            "tool_choice": {"type": "tool", "name": tool},
        }
        message = await self._create(arguments)
        output = next((block.input for block in message.content if block.type == "tool_use"), None)
        usage = message.usage
        return ModelResult(
            output=output if isinstance(output, dict) else {},
            usage=Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_input_tokens or 0,
                cache_write_tokens=usage.cache_creation_input_tokens or 0,
            ),
            model=message.model or self.name,
        )

    async def _create(self, arguments: dict[str, Any]) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self.client.messages.create(**arguments)
            except RETRYABLE as error:
                if attempt == self.max_attempts:
                    raise ModelUnavailable(
                        f"{self.name} did not answer after {attempt} attempts: {error}"
                    ) from error
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def default_model(scripted: Any) -> Any:
    """The real model when ``ANTHROPIC_API_KEY`` is set, else the given scripted one."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return AnthropicModel()
    return scripted
