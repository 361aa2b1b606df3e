"""The ``claimcheck`` command line: one typer app, its commands grouped by what they do."""

from bus.operations.cli import console, processes, records, workflows
from bus.operations.cli.common import app, main

__all__ = ["app", "console", "main", "processes", "records", "workflows"]
