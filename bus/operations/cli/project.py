"""``claimcheck new``: start a project of one's own (one agent, one tool, a policy, a test)."""

from __future__ import annotations

from pathlib import Path

from bus.operations.cli.common import app, console, fail


@app.command()
def new(directory: Path) -> None:
    """Make a project in DIRECTORY: claimcheck.toml, an agent, a tool, a policy and a test."""
    from bus.operations.scaffold import ScaffoldError, scaffold

    try:
        written = scaffold(directory)
    except (ScaffoldError, OSError) as error:
        raise fail(str(error)) from None
    for path in written:
        console.print(str(path), markup=False, highlight=False)
    console.print(
        f"\nnext: cd {directory} && claimcheck up --reload   (or: python -m pytest tests)",
        markup=False,
        highlight=False,
    )
