"""``AnthropicModel``: structured reasoning with Claude through the official ``anthropic`` SDK.

- The output type's JSON Schema becomes the input schema of one tool, and the
  model is forced to call it: the tool's input is the structured output.
- The stable prefix (the tool definition, the system prompt, the instructions) comes
  before the context and is marked for prompt caching when it is long enough for the
  model's family to cache (``min_cache_tokens`` in the price table); the cache reads
  and writes the API reports are recorded with the call and shown in the trace.
- A repair is a conversation: the model sees its previous tool call and, as that
  call's error result, the exact validation errors.
- The result says why the model stopped: ``max_tokens`` (cut off; the SDK asks again
  with more room, up to ``max_tokens_ceiling``) or ``refusal`` (escalated).
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

Unless given, the model, limits, temperature and timeout are the agent's model settings
(:mod:`agents.model_settings`: ``CLAIMCHECK_MODEL*`` and the ``CLAIMCHECK_MODELS`` file);
the client reads ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` as usual.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic

from agents.model import ModelFailure, ModelRequest, ModelResult
from agents.model_settings import ModelSettings, model_settings
from bus.runtime.prices import load_prices
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


PREVIOUS_CALL = "toolu_previous_answer"
"""The id the previous answer's tool call is shown under in a repair conversation."""

CHARS_PER_TOKEN = 3
"""A generous estimate of a prefix's length in tokens (JSON schemas tokenize densely): a
prefix marked for caching that is in fact too short is simply not cached by the API."""


def tool_definition(request: ModelRequest) -> dict[str, Any]:
    """The one tool the model must call: its input is the structured output."""
    tool = request.output_type.__name__
    return {
        "name": tool,
        "description": f"Answer with a {tool}.",
        "input_schema": request.output_type.model_json_schema(),
    }


def conversation(request: ModelRequest, tool: str) -> list[dict[str, Any]]:
    """The context, and for a repair the model's previous tool call with what was wrong."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": request.context_message()}]
    if request.previous is None:
        if request.repair:
            messages[0]["content"] += f"\n\n{request.repair_message()}"
        return messages
    return [
        *messages,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": PREVIOUS_CALL, "name": tool, "input": request.previous}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": PREVIOUS_CALL,
                    "is_error": True,
                    "content": request.repair_message(),
                }
            ],
        },
    ]


class AnthropicModel:
    """Claude through the Messages API, with one agent's :class:`ModelSettings`."""

    def __init__(
        self,
        model: str | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        client: anthropic.AsyncAnthropic | None = None,
        agent: str | None = None,
        settings: ModelSettings | None = None,
    ) -> None:
        configured = settings or model_settings(agent)
        given = {"model": model, "max_tokens": max_tokens, "timeout": timeout}
        self.settings = configured.model_copy(
            update={key: value for key, value in given.items() if value is not None}
        )
        self.name = self.settings.model
        self.min_cache_tokens = load_prices(Settings().prices).price(self.name)[1].min_cache_tokens
        self.client = client or anthropic.AsyncAnthropic(
            timeout=self.settings.timeout,
            max_retries=0,  # retries are the runtime's: each attempt is an event
        )

    def max_tokens(self, more_room: int) -> int:
        """The output limit of an attempt after ``more_room`` answers were cut off."""
        limit = self.settings.max_tokens
        for _ in range(more_room):
            limit = self.settings.more_room(limit)
        return limit

    def system(self, request: ModelRequest, tool: dict[str, Any]) -> list[dict[str, Any]]:
        """The stable prefix after the tool: the system prompt, then the instructions.

        The cache breakpoint goes on its last block (the API caches tools, then system,
        in that order) when the prefix is long enough for the model's family to cache.
        """
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": text}
            for text in (request.system, request.instructions)
            if text
        ]
        prefix = len(json.dumps(tool)) + sum(len(block["text"]) for block in blocks)
        if blocks and prefix / CHARS_PER_TOKEN >= self.min_cache_tokens:
            blocks[-1]["cache_control"] = {"type": "ephemeral"}
        return blocks

    async def complete(self, request: ModelRequest) -> ModelResult:
        tool = tool_definition(request)
        limit = self.max_tokens(request.more_room)
        arguments: dict[str, Any] = {
            "model": self.name,
            "max_tokens": limit,
            "system": self.system(request, tool),
            "messages": conversation(request, tool["name"]),
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": tool["name"]},
        }
        if self.settings.effort is not None:
            arguments["output_config"] = {"effort": self.settings.effort}
        if self.settings.temperature is not None:
            # No longer a parameter of the SDK; older models still take it in the body.
            arguments["extra_body"] = {"temperature": self.settings.temperature}
        message = await self._create(arguments)
        output = next((block.input for block in message.content if block.type == "tool_use"), None)
        text = " ".join(block.text for block in message.content if block.type == "text")
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
            stop_reason=message.stop_reason or "",
            max_tokens=limit,
            text=text,
        )

    async def _create(self, arguments: dict[str, Any]) -> Any:
        try:
            return await self.client.messages.create(**arguments)
        except anthropic.APIError as error:
            raise classify(error) from error


def default_model(scripted: Any, agent: str | None = None) -> Any:
    """The real model (with ``agent``'s settings) when ``ANTHROPIC_API_KEY`` is set, else
    the given scripted one."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return AnthropicModel(agent=agent)
    return scripted
