"""Setting up a deployment once: its NATS identities, the ledger's tables, the views, the
streams and consumers.

``claimcheck init`` runs this before any service starts (the compose file's init job,
the embedded stack before its runtimes). Every step is idempotent and safe to run from
several places at once, so a second init, or two at the same moment, change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from nats.errors import Error as NatsError

from bus.ledger.setup import init_ledger
from bus.ledger.view_runner import open_views
from bus.settings import Settings
from bus.transport.auth import agent_role, write_secret
from bus.transport.connection import connect, ensure_streams
from bus.transport.identities import ACCOUNT_SEED, Identities
from bus.transport.subjects import OPERATOR, Subjects

log = logging.getLogger(__name__)


async def initialise(settings: Settings, attempts: int = 10) -> None:
    """Create what every service expects to find, on the ledger and on NATS."""
    url = settings.ledger_url()
    if url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(init_ledger, url, lambda: open_views(settings))
    nc = await connect(settings, "claimcheck-init")
    try:
        subjects = Subjects(settings.prefix)
        for attempt in range(attempts):
            try:
                await ensure_streams(nc.jetstream(), subjects, settings.stream_replicas)
                break
            except NatsError as error:
                # Another init created the same stream or bucket between our look and our
                # create, or the cluster is electing a leader: look again.
                if attempt == attempts - 1:
                    raise
                log.info("setting up streams again after %s", error)
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        await nc.close()


SERVICE_ROLES = ["runtime", "tools", "auditor", OPERATOR]
"""The roles every deployment has; each agent adds ``agent-<name>``."""


def issue_identities(settings: Settings, directory: Path, agents: list[str]) -> dict[str, Path]:
    """``claimcheck auth init``: the deployment's operator, account and users (idempotent:
    existing keys and credentials are kept, missing ones added)."""
    roles = [*SERVICE_ROLES, *(agent_role(check_agent_name(agent)) for agent in agents)]
    issued = Identities(directory, Subjects(settings.prefix)).issue(roles)
    ensure_ledger_password(directory)
    return issued


def ensure_ledger_password(directory: Path) -> None:
    """The ledger database's password, for PostgreSQL (``ledger.password``, its
    ``POSTGRES_PASSWORD_FILE``) and for the runtimes as a libpq password file
    (``ledger.pgpass``, their ``PGPASSFILE``), so no URL or environment holds it."""
    path = directory / "ledger.password"
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24))
    write_secret(directory / "ledger.pgpass", f"*:*:*:*:{path.read_text().strip()}\n")


def add_agent(settings: Settings, directory: Path, agent: str, policies: Path) -> AddedAgent:
    """One new agent's credentials, signed by the existing account (no server change), and a
    policy stub for its permissions (deny by default until someone allows its actions)."""
    role = agent_role(check_agent_name(agent))
    if not (directory / ACCOUNT_SEED).exists():
        raise FileNotFoundError(
            f"no deployment identities in {directory}: run `claimcheck auth init` first"
        )
    identities = Identities(directory, Subjects(settings.prefix))
    creds = identities.creds_path(role)
    if not creds.exists():
        identities.add_user(role)
    policies.mkdir(parents=True, exist_ok=True)
    stub = policies / f"{agent}.toml"
    if not stub.exists():
        stub.write_text(POLICY_STUB.format(agent=agent))
    return AddedAgent(creds, stub)


AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_agent_name(agent: str) -> str:
    """An agent's name is a NATS subject token and a file name: lower case, digits, - and _."""
    if not AGENT_NAME.match(agent):
        raise ValueError(
            f"invalid agent name {agent!r}: use lower-case letters, digits, '-' and '_' "
            "(at most 63, starting with a letter or digit)"
        )
    return agent


@dataclass(frozen=True)
class AddedAgent:
    credentials: Path
    policy_stub: Path


POLICY_STUB = """\
# Policy rules for the agent {agent!r}: copy them into the deployment's policy file
# (CLAIMCHECK_POLICY) once edited. Anything not allowed is denied; the actor is the
# agent's NATS identity, which its credentials fix.

[[rules]]
name = "{agent}-example"
actor = "{agent}"
action = "send_email"          # a tool's action
resource = "mailto:*@example.com"
effect = "deny"                # "allow" once reviewed
max_calls = 1
"""
