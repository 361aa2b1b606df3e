"""Every command, and so every service, runs its event loop on uvloop.

The standard loop's own work (callbacks, the selector, socket transports) was a tenth or
more of each service's CPU under load; a command started on it would quietly give that back.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import uvloop

from bus.operations import cli
from bus.operations.cli.common import run


def test_a_command_runs_on_uvloop() -> None:
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert issubclass(run(loop_type()), uvloop.Loop)


def test_no_command_starts_a_standard_loop() -> None:
    calls = [
        f"{path.name}:{node.lineno}"
        for path in Path(cli.__file__).parent.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
    ]
    assert calls == []  # each command goes through common.run


async def test_the_tests_run_on_the_loop_the_services_run_on() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # tests/conftest.py's hook
