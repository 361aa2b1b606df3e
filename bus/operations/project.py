"""The project file, ``claimcheck.toml``: which agents and tool catalogues a stack runs.

In the spirit of ``langgraph.json``, one file beside the code says what ``claimcheck
up`` starts::

    policy = "policy.toml"          # settings: any Settings field, env overrides
    ledger = "sqlite:///.claimcheck/ledger.db"
    tools = ["my_tools:catalogue"]  # MODULE:CATALOGUE, one tool host each

    [[agents]]
    target = "my_agents:triage"     # MODULE:OBJECT
    replicas = 2

Its top-level settings are read by :class:`~bus.settings.Settings` itself; this module
reads the rest. Without a project file in the current directory, the stack runs the
example complaint project (the demo's agents and tools).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.settings import PROJECT_FILE

TARGET = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class ProjectError(ValueError):
    """A project file that cannot be used; the message says where and what to change."""


class AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(pattern=TARGET, description="MODULE:OBJECT of an agents.Agent.")
    replicas: int = Field(1, ge=1, le=64, description="Processes sharing the agent's inbox.")


class Project(BaseModel):
    """What a stack runs; the file's other top-level keys are settings, checked there."""

    model_config = ConfigDict(extra="ignore")

    agents: list[AgentEntry] = []
    tools: list[Annotated[str, Field(pattern=TARGET)]] = Field(
        [], description="MODULE:CATALOGUE of each tool catalogue."
    )
    path: Path | None = None
    """The file this came from; None for the built-in example project."""

    @classmethod
    def load(cls, path: Path) -> Project:
        try:
            document = tomllib.loads(path.read_text())
            project = cls.model_validate({**document, "path": path})
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ProjectError(f"cannot read {path}: {error}") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ProjectError(f"{path}: {problems}") from None
        return project


EXAMPLE = Project(
    agents=[
        AgentEntry(target="agents.complaints:triage"),
        AgentEntry(target="agents.complaints:notifier"),
    ],
    tools=["bus.tools:complaints"],
)
"""The example complaint project: what runs without a project file."""


def find_project(directory: Path | None = None) -> Project:
    """The project of ``directory`` (the current one): its ``claimcheck.toml``, or the example."""
    path = (directory or Path.cwd()) / PROJECT_FILE
    return Project.load(path) if path.exists() else EXAMPLE
