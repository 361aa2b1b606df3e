"""The tool SDK: a tool is a typed async function declared with :func:`tool`.

A tool takes one pydantic input and returns one pydantic output. Its declaration
says what the runtime needs to govern it without running any of its code: the
resource the policy sees (a template over input fields, ``mailto:{to}``), the facts
its evidence records (fields of the input or the output), how the external system
recognises a retry (``idempotency``) and, where it can, how to find out whether a
call whose outcome is unknown took effect (``reconcile``) and whether a recorded side
effect still exists as recorded (``confirm``, for ``claimcheck verify --external``).

A :class:`Catalogue` is a named collection of tools; ``claimcheck tools serve
MODULE:CATALOGUE`` serves one. The tool host registers each tool's
:class:`~handoff_schemas.ToolDescription` in the deployment's registry, from which
the runtime learns its schema; only a tool host ever calls the function.
"""

from __future__ import annotations

import importlib
import inspect
import json
import string
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel

from bus.settings import Settings
from handoff_schemas import Evidence, FactSource, ToolDescription

Idempotency = Literal["key", "none"]


class ToolFailure(Exception):
    """A side effect that did not happen; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ToolDeclarationError(TypeError):
    """A tool declared wrongly (says which tool and what to change), raised at import."""


@dataclass(frozen=True)
class Call:
    """What a tool function knows of the call besides its input.

    ``idempotency_key`` is the same on every retry of one step: hand it to the external
    system (a unique column, a request id header) so that it recognises a retry.
    """

    idempotency_key: str
    workflow_id: str
    actor: str
    settings: Settings


class CannotConfirm(Exception):
    """The tool cannot ask its system about a side effect (none configured, unreachable)."""


def differences(
    facts: Mapping[str, Any], found: Mapping[str, Any], fields: Mapping[str, str]
) -> list[str]:
    """Each recorded fact the system shows otherwise (``fields``: fact -> the system's field)."""
    return [
        f"{fact} is {found.get(field)!r} in the system, {facts[fact]!r} in the evidence"
        for fact, field in fields.items()
        if fact in facts and found.get(field) != facts[fact]
    ]


Function = Callable[[Any, Call], Awaitable[BaseModel]]
Reconcile = Callable[[Any, Call], Awaitable[BaseModel | None]]
Confirm = Callable[[Evidence, Settings], Awaitable[list[str]]]
"""Ask the tool's own system whether the side effect a ``succeeded`` evidence record
describes (its ``refs`` and ``facts``) exists as recorded: what differs (``[]``: it does;
a missing one is a difference too), or :class:`CannotConfirm` when it cannot be asked."""


@dataclass(frozen=True)
class ToolSpec:
    """One declared tool: its function, its types and what the runtime must know of it."""

    name: str
    function: Function
    input: type[BaseModel]
    output: type[BaseModel]
    resource: str
    facts: dict[str, FactSource]
    idempotency: Idempotency = "key"
    reconcile: Reconcile | None = None
    description: str = ""
    confirm: Confirm | None = None

    async def __call__(self, payload: BaseModel, call: Call) -> BaseModel:
        return await self.function(payload, call)

    def describe(self, catalogue: str = "") -> ToolDescription:
        """What a tool host registers: the JSON Schemas and the declaration, no code."""
        return ToolDescription(
            name=self.name,
            input_schema=self.input.model_json_schema(),
            output_schema=self.output.model_json_schema(by_alias=True),
            resource=self.resource,
            facts=self.facts,
            idempotency=self.idempotency,
            reconcilable=self.reconcile is not None,
            description=self.description,
            catalogue=catalogue,
        )


def tool(
    *,
    name: str,
    resource: str,
    facts: Sequence[str] | Mapping[str, str] = (),
    idempotency: Idempotency = "key",
    reconcile: Reconcile | None = None,
    confirm: Confirm | None = None,
) -> Callable[[Function], ToolSpec]:
    """Declare ``async def f(payload: Input, call: Call) -> Output`` as the tool ``name``.

    ``facts`` names the fields the evidence records: a list of field names, or a
    mapping of fact name to field name (``{"recipient": "to"}``); each is looked up in
    the input, then in the output. ``reconcile(payload, call)`` returns the output of
    the earlier attempt if it took effect, else None; ``confirm(evidence, settings)`` asks
    the tool's system about a recorded side effect (see :data:`Confirm`).
    """

    def declare(function: Function) -> ToolSpec:
        if not inspect.iscoroutinefunction(function):
            raise ToolDeclarationError(f"tool {name!r}: {function.__name__} must be async def")
        source, output = _types(name, function)
        return ToolSpec(
            name=name,
            function=function,
            input=source,
            output=output,
            resource=_checked_resource(name, resource, source),
            facts=_fact_sources(name, facts, source, output),
            idempotency=idempotency,
            reconcile=reconcile,
            description=inspect.getdoc(function) or "",
            confirm=confirm,
        )

    return declare


def _types(name: str, function: Function) -> tuple[type[BaseModel], type[BaseModel]]:
    try:
        hints = get_type_hints(function)
    except NameError as error:
        raise ToolDeclarationError(
            f"tool {name!r}: {error}; declare its input and output models at module level"
        ) from None
    parameters = list(inspect.signature(function).parameters)
    source = hints.get(parameters[0]) if parameters else None
    output = hints.get("return")
    for what, found in (("its first parameter", source), ("its return type", output)):
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise ToolDeclarationError(f"tool {name!r}: {what} must be a pydantic model")
    return source, output  # type: ignore[return-value]


def fields_of(model: type[BaseModel]) -> set[str]:
    """The names a model's JSON uses (aliases where set)."""
    return {info.alias or field_name for field_name, info in model.model_fields.items()}


def template_fields(template: str) -> list[str]:
    """The field names a resource template fills in (``{to}``); no attribute or index access."""
    found = [part[1] for part in string.Formatter().parse(template) if part[1] is not None]
    for name in found:
        if not name.isidentifier():
            raise ValueError(f"resource template {template!r}: {{{name}}} is not a field name")
    return found


def fill_resource(template: str, payload: Mapping[str, Any]) -> str:
    """The resource of one call: the template filled from the validated payload."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(str(payload.get(name, "")))
    return "".join(parts)


def _checked_resource(name: str, template: str, source: type[BaseModel]) -> str:
    try:
        missing = set(template_fields(template)) - fields_of(source)
    except ValueError as error:
        raise ToolDeclarationError(f"tool {name!r}: {error}") from None
    if missing:
        raise ToolDeclarationError(f"tool {name!r}: resource names unknown fields {missing}")
    return template


def _fact_sources(
    name: str,
    facts: Sequence[str] | Mapping[str, str],
    source: type[BaseModel],
    output: type[BaseModel],
) -> dict[str, FactSource]:
    pairs = facts.items() if isinstance(facts, Mapping) else ((f, f) for f in facts)
    found = {}
    for fact, field_name in pairs:
        if field_name in fields_of(source):
            found[fact] = FactSource(side="input", field=field_name)
        elif field_name in fields_of(output):
            found[fact] = FactSource(side="output", field=field_name)
        else:
            raise ToolDeclarationError(
                f"tool {name!r}: fact {fact!r} names {field_name!r}, "
                "a field of neither its input nor its output"
            )
    return found


def declared_facts(
    description: ToolDescription | None, payload: Mapping[str, Any], output: Mapping[str, Any]
) -> dict[str, Any]:
    """The declared facts of one call, as the runtime saw them (never the agent's word).

    Read from the raw payload the runtime validated and the output the tool host
    returned; a fact absent from either (a failed call has no ``ticketId``) is left out
    rather than recorded empty, so a claim asserting it is unsupported. A tool no
    longer registered (a human approved its call later) declares none.
    """
    if description is None:
        return {}
    sides = {"input": payload, "output": output}
    return {
        fact: sides[where.side][where.field]
        for fact, where in description.facts.items()
        if where.field in sides[where.side]
    }


@dataclass
class Catalogue:
    """A named collection of tools, served together by ``claimcheck tools serve``."""

    name: str
    tools: list[ToolSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.tools]
        twice = {n for n in names if names.count(n) > 1}
        if twice:
            raise ToolDeclarationError(f"catalogue {self.name!r} declares {twice} twice")

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self.tools)

    def __getitem__(self, name: str) -> ToolSpec:
        return next(spec for spec in self.tools if spec.name == name)

    def schemas(self) -> dict[str, ToolDescription]:
        """Each tool's description, its input and output JSON Schemas included, by name."""
        return {spec.name: spec.describe(self.name) for spec in self.tools}


class CatalogueNotFound(LookupError):
    """``MODULE:CATALOGUE`` names nothing loadable (the message says what was wrong)."""


def load_object(target: str) -> Any:
    """The object at ``MODULE:OBJECT``, importing the module from the current directory too."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CatalogueNotFound(f"{target!r}: give MODULE:OBJECT, e.g. my_tools:catalogue")
    here = str(Path.cwd())
    if here not in sys.path:  # a user's module beside claimcheck.toml, without PYTHONPATH
        sys.path.insert(0, here)
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise CatalogueNotFound(f"cannot load {target}: {error}") from None


def load_catalogue(target: str) -> Catalogue:
    """The :class:`Catalogue` at ``MODULE:CATALOGUE``."""
    found = load_object(target)
    if not isinstance(found, Catalogue):
        raise CatalogueNotFound(f"{target} is a {type(found).__name__}, not a tool Catalogue")
    return found


def tool_schemas(catalogues: Sequence[Catalogue]) -> dict[str, dict[str, Any]]:
    """Tool name -> its input and output JSON Schemas (for the AsyncAPI document)."""
    return {
        spec.name: {"input": description.input_schema, "output": description.output_schema}
        for catalogue in catalogues
        for spec in catalogue
        for description in [spec.describe(catalogue.name)]
    }


def export_tool_schemas(catalogues: Sequence[Catalogue], directory: Path) -> list[Path]:
    """Write ``tools/<name>.input.schema.json`` and ``.output.schema.json`` per tool."""
    written = []
    for name, schemas in tool_schemas(catalogues).items():
        for side, schema in schemas.items():
            path = directory / "tools" / f"{name}.{side}.schema.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
            path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
            written.append(path)
    return written
