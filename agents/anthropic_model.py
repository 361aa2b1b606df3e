"""``AnthropicModel``: structured reasoning with Claude through the official ``anthropic`` SDK.

- The output type's JSON Schema becomes the input schema of one tool, and the
  model is forced to call it: the tool's input is the structured output.
- The stable system prompt is marked for prompt caching.
- Usage, cache reads and cache writes included, goes back to the runtime,
  which prices it from the policy's table.
- Each call is one attempt. A failure is raised as a classified
  :class:`~agents.model.ModelFailure`: overloaded (529), rate limited (429, with its
  ``retry-after``), other server errors, timeouts and connection errors are
  transient; authentication, permission, invalid request and unknown model are
  permanent. The SDK reports it to the runtime, whose failure table decides
  whether and when to try again, so every attempt is in the ledger.
- Output that does not fit the schema is the SDK's business: ``ctx.reason``
  reports it as ``invalid_tool_payload`` and asks for a repair.

Unless given, the name and limits come from the settings (``CLAIMCHECK_MODEL``,
``CLAIMCHECK_MODEL_MAX_TOKENS``, ``CLAIMCHECK_MODEL_TIMEOUT``); the client reads
``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` as usual.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic

from agents.model import ModelFailure, ModelRequest, ModelResult
from bus.settings import Settings
from handoff_schemas import Usage

TRANSIENT_STATUS = frozenset({408, 409, 429})
"""Besides 5xx (529 is overloaded): request timeout, conflict, rate limited."""


def retry_after(error: anthropic.APIStatusError) -> float | None:
    """The provider's ``retry-after`` in seconds, when it sent one as a number."""
    value = error.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify(error: anthropic.APIError) -> ModelFailure:
    """Transient (worth another attempt later) or permanent, with the provider's words."""
    if isinstance(error, anthropic.APITimeoutError):
        return ModelFailure(f"timeout: {error}", transient=True)
    if isinstance(error, anthropic.APIConnectionError):
        return ModelFailure(f"connection error: {error}", transient=True)
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        transient = status >= 500 or status in TRANSIENT_STATUS
        return ModelFailure(f"HTTP {status}: {error.message}", transient, retry_after(error))
    return ModelFailure(f"{type(error).__name__}: {error}", transient=False)


class AnthropicModel:
    def __init__(
        self,
        model: str | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        settings = Settings()
        self.name = model or settings.model
        self.max_tokens = max_tokens or settings.model_max_tokens
        self.client = client or anthropic.AsyncAnthropic(
            timeout=timeout or settings.model_timeout,
            max_retries=0,  # retries are the runtime's: each attempt is an event
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
        try:
            return await self.client.messages.create(**arguments)
        except anthropic.APIError as error:
            raise classify(error) from error


def default_model(scripted: Any) -> Any:
    """The real model when ``ANTHROPIC_API_KEY`` is set, else the given scripted one."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return AnthropicModel()
    return scripted
