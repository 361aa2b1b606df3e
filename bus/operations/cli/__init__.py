"""The ``claimcheck`` command line: one typer app, its commands grouped by what they do."""

from bus.operations.cli import (
    console,
    controls,
    deploy,
    processes,
    project,
    records,
    show,
    workflows,
)
from bus.operations.cli.common import app, main

__all__ = [
    "app",
    "console",
    "controls",
    "deploy",
    "main",
    "processes",
    "project",
    "records",
    "show",
    "workflows",
]
