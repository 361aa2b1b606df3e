"""The ``claimcheck`` command line: one typer app, its commands grouped by what they do."""

from bus.operations.cli import console, deploy, processes, project, records, workflows
from bus.operations.cli.common import app, main

__all__ = ["app", "console", "deploy", "main", "processes", "project", "records", "workflows"]
