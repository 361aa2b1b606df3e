"""Models reason; they never act. The SDK asks a model for a pydantic-typed output.

A :class:`Model` turns a :class:`ModelRequest` into a :class:`ModelResult`. The
SDK validates the output against the requested pydantic model and, when it
does not validate, asks again showing the model its previous answer and the
exact validation errors (the repair loop). A result says why the model stopped:
an answer cut off at its token limit is asked again with more room, a refusal
escalates to a human (:mod:`agents.context`).

:class:`ScriptedModel` answers without a network, for the offline demo and for
tests; it counts its calls so a test can prove a recorded step was not re-asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from handoff_schemas import Usage


@dataclass(frozen=True)
class ModelRequest:
    """What the model is asked.

    ``context`` is the structured data the prompt is about; an adapter renders it
    as JSON after the instructions. ``repair`` lists what was wrong with the
    ``previous`` answer (the exact validation errors), when there was one.
    ``more_room`` counts the answers cut off at their token limit so far: an
    adapter gives this attempt more output tokens for each.
    """

    system: str
    instructions: str
    context: dict[str, Any]
    output_type: type[BaseModel]
    repair: list[str] = field(default_factory=list)
    previous: dict[str, Any] | None = None
    more_room: int = 0

    def context_message(self) -> str:
        return json.dumps(self.context, indent=2, sort_keys=True)

    def repair_message(self) -> str:
        """What was wrong with the previous answer, and the request to answer again."""
        problems = "\n".join(f"- {problem}" for problem in self.repair)
        return f"Your previous answer did not validate:\n{problems}\nAnswer again."

    def user_message(self) -> str:
        """The whole request as one message, for models without a conversation."""
        message = f"{self.instructions}\n\n{self.context_message()}"
        if self.previous is not None:
            previous = json.dumps(self.previous, sort_keys=True)
            message += f"\n\nYour previous answer was:\n{previous}"
        if self.repair:
            message += f"\n\n{self.repair_message()}"
        return message


class ModelFailure(Exception):
    """One model attempt that failed, classified so the runtime's failure table can decide.

    ``transient`` failures (overloaded, rate limited, timeout, connection error) say
    nothing about the request: the runtime may advise trying again, no sooner than
    ``retry_after`` seconds when the provider said so. Permanent ones (authentication,
    permission, invalid request, unknown model) will fail every time: the workflow ends.
    Adapters never retry themselves, so every attempt is visible in the ledger.
    """

    def __init__(self, detail: str, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """The failure table's kind for this failure."""
        return "model_unavailable" if self.transient else "model_error"


STOP_REASONS = ("tool_use", "end_turn", "max_tokens", "stop_sequence", "refusal", "pause_turn")
"""Why a model stopped, as the Messages API says it."""


@dataclass(frozen=True)
class ModelResult:
    """One answer: the structured output, the provider's usage and model name, and why it
    stopped (``max_tokens``: cut off at ``max_tokens``; ``refusal``: the model declined;
    ``text`` holds what it said besides the output)."""

    output: dict[str, Any]
    usage: Usage
    model: str
    stop_reason: str = "tool_use"
    max_tokens: int | None = None
    text: str = ""


class Model(Protocol):
    name: str

    async def complete(self, request: ModelRequest) -> ModelResult: ...


Answer = dict[str, Any] | BaseModel | ModelResult
Responder = Callable[[ModelRequest], Answer]


class ScriptedModel:
    """A deterministic model: a function of the request, or a fixed list of replies.

    A reply is the output (a dict or a pydantic value), or a whole :class:`ModelResult`
    to script a stop reason (an answer cut off, a refusal). ``name`` is the model it
    stands in for, which prices its ``usage`` (``scripted``, the default, is free).
    """

    def __init__(
        self,
        script: Responder | Sequence[Answer],
        usage: Usage | None = None,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self._script = script
        self._usage = usage
        self.calls: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResult:
        self.calls.append(request)
        if callable(self._script):
            answer = self._script(request)
        else:
            if len(self.calls) > len(self._script):
                raise RuntimeError(f"ScriptedModel has only {len(self._script)} replies")
            answer = self._script[len(self.calls) - 1]
        if isinstance(answer, ModelResult):
            return answer
        output = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        # Without a fixed usage, count words as tokens: a stand-in that grows with the prompt.
        usage = self._usage or Usage(
            input_tokens=len(request.user_message().split()),
            output_tokens=len(json.dumps(output).split()),
        )
        return ModelResult(output=output, usage=usage, model=self.name)
