"""Asking the model on an agent's behalf: one call, each attempt a recorded step.

What the model said is recorded (``reasoning``, priced by the runtime); why it did
not answer is reported (``failure``), and the runtime's advice is followed: wait and
try again in a new step, or stop. Replayed, a recorded answer is returned and recorded
failures are passed over, so the model is never asked twice for one step.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from agents.client import unwrap
from agents.model import Model, ModelFailure, ModelRequest, ModelResult
from bus import telemetry
from handoff_schemas import (
    FailureRequest,
    ReasoningReply,
    ReasoningRequest,
    Reply,
    RetryAdvice,
    convert,
)

if TYPE_CHECKING:
    from agents.context import Context


class WorkflowHalted(Exception):
    """The runtime decided a failure ends this handling: escalated, stopped or failed."""

    def __init__(self, kind: str, detail: str, advice: RetryAdvice) -> None:
        super().__init__(f"{kind}: {detail} -> {advice.strategy}")
        self.kind = kind
        self.advice = advice


def provider(model: Model) -> str:
    """The ``gen_ai.provider.name`` of a model adapter."""
    return "anthropic" if type(model).__name__ == "AnthropicModel" else model.name


def follow(advice: RetryAdvice, kind: str, detail: str) -> None:
    """Go on only when the runtime advises another model attempt."""
    if advice.strategy != "retry":
        raise WorkflowHalted(kind, detail, advice)


class ModelCalls:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ask(self, request: ModelRequest, purpose: str) -> ReasoningReply:
        """One model call, each attempt one step: what the model said, or why it did not.

        A failed attempt is reported to the runtime (``model_unavailable`` or
        ``model_error``); the agent follows its advice: wait the delay and try
        again in a new step, or stop. Replayed, a recorded answer is returned and
        recorded failures are passed over without asking the model again.
        """
        while True:
            key = self.ctx._next_key()
            recorded = self.ctx.state.steps.get(key)
            if recorded is not None:
                reply = convert(recorded, Reply)
                if reply.ok and isinstance(reply.result, dict) and "strategy" in reply.result:
                    follow(convert(reply.result, RetryAdvice), "model", "recorded failure")
                    continue
                return unwrap(reply, ReasoningReply)
            result = await self._attempt(request, purpose)
            if isinstance(result, ModelFailure):
                advice = await self.ctx._client.call(
                    "failure",
                    FailureRequest(
                        workflow_id=self.ctx.workflow_id,
                        step_key=key,
                        kind=result.kind,
                        detail=f"{self.ctx.model.name}: {result.detail}",
                        retry_after_seconds=result.retry_after,
                    ),
                    RetryAdvice,
                )
                follow(advice, result.kind, result.detail)
                await asyncio.sleep(advice.delay_seconds)
                continue
            reasoning = ReasoningRequest(
                workflow_id=self.ctx.workflow_id,
                step_key=key,
                purpose=purpose,
                model=result.model,
                output=result.output,
                usage=result.usage,
                stop_reason=result.stop_reason,
            )
            return await self.ctx._client.call("reasoning", reasoning, ReasoningReply)

    async def _attempt(self, request: ModelRequest, purpose: str) -> ModelResult | ModelFailure:
        """Ask the model once, in a span that says what came of it."""
        with telemetry.span(
            f"chat {self.ctx.model.name}",
            kind="CLIENT",
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": self.ctx.model.name,
                "gen_ai.provider.name": provider(self.ctx.model),
                "gen_ai.agent.name": self.ctx.agent,
                "claimcheck.purpose": purpose,
            },
        ) as span:
            try:
                result = await self.ctx.model.complete(request)
            except ModelFailure as failure:
                telemetry.set_attributes(
                    span,
                    **{
                        "error.type": failure.kind,
                        "claimcheck.failure": failure.detail,
                        "claimcheck.retry_after": failure.retry_after,
                    },
                )
                return failure
            telemetry.set_attributes(
                span,
                **{
                    "gen_ai.response.model": result.model,
                    "gen_ai.response.finish_reasons": [result.stop_reason],
                    "gen_ai.usage.input_tokens": result.usage.input_tokens,
                    "gen_ai.usage.output_tokens": result.usage.output_tokens,
                    "gen_ai.usage.cache_read.input_tokens": result.usage.cache_read_tokens,
                    "gen_ai.usage.cache_creation.input_tokens": result.usage.cache_write_tokens,
                    "claimcheck.belief": json.dumps(result.output, sort_keys=True),
                },
            )
        return result
