"""Models reason; they never act. The SDK asks a model for a pydantic-typed output.

A :class:`Model` turns a :class:`ModelRequest` into a :class:`ModelResult`. The
SDK validates the output against the requested pydantic model and, when it
does not validate, asks again with the validation errors (the repair loop).

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
    as JSON after the instructions. ``repair`` lists the validation errors of
    the previous answer, when there was one.
    """

    system: str
    instructions: str
    context: dict[str, Any]
    output_type: type[BaseModel]
    repair: list[str] = field(default_factory=list)

    def user_message(self) -> str:
        message = f"{self.instructions}\n\n{json.dumps(self.context, indent=2, sort_keys=True)}"
        if self.repair:
            problems = "\n".join(f"- {problem}" for problem in self.repair)
            message += f"\n\nYour previous answer did not validate:\n{problems}\nAnswer again."
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


@dataclass(frozen=True)
class ModelResult:
    output: dict[str, Any]
    usage: Usage
    model: str


class Model(Protocol):
    name: str

    async def complete(self, request: ModelRequest) -> ModelResult: ...


Responder = Callable[[ModelRequest], dict[str, Any] | BaseModel]


class ScriptedModel:
    """A deterministic model: a function of the request, or a fixed list of replies."""

    name = "scripted"

    def __init__(
        self, script: Responder | Sequence[dict[str, Any] | BaseModel], usage: Usage | None = None
    ) -> None:
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
        output = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        # Without a fixed usage, count words as tokens: a stand-in that grows with the prompt.
        usage = self._usage or Usage(
            input_tokens=len(request.user_message().split()),
            output_tokens=len(json.dumps(output).split()),
        )
        return ModelResult(output=output, usage=usage, model=self.name)
