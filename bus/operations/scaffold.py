"""``claimcheck new DIR``: a project with one agent, one tool, a policy and a passing test.

The files come from the templates beside this module (``scaffold/``, ``$name`` and
``$package`` filled in); ``package/`` becomes the project's Python package, named
after the directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).with_name("scaffold")


class ScaffoldError(ValueError):
    """The project cannot be made there (the message says why)."""


def package_name(directory: Path) -> str:
    """A Python package name from the directory's name: ``my-bot`` -> ``my_bot``."""
    name = re.sub(r"\W+", "_", directory.resolve().name).strip("_").lower()
    return name if name and not name[0].isdigit() else f"project_{name}"


def scaffold(directory: Path) -> list[Path]:
    """Write the project into ``directory`` (new or empty); return the files written."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(f"{directory} exists and is not an empty directory")
    package = package_name(directory)
    values = {"name": directory.resolve().name, "package": package}
    written = []
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATES).with_suffix("")
        if relative.parts[0] == "package":
            relative = Path(package, *relative.parts[1:])
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template.read_text()).substitute(values))
        written.append(target)
    return written
