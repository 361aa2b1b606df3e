"""NATS accounts for every role, so the server itself enforces the trust boundaries.

Each role connects with its own user. Subject permissions make it impossible
for an agent to publish on the tool, handoff or event subjects, to act under
another agent's name (it may publish only under ``<prefix>.rt.<its name>.>``),
or to read another agent's inbox; beyond asking the runtime it may only fetch from
and acknowledge its own inbox consumer (no consumer it makes, no object store, no
stream or account information). The tool host may only answer calls and use the
keys of its shared idempotency journal. The auditor may publish nothing at all: it
reads the evidence stream through a push consumer the runtime prepared.

Replies go to per-role inbox prefixes (``_INBOX_<role>.``), so no role can read
the replies meant for another.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.transport.subjects import Subjects

JS = "$JS.API"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.user}"

    @classmethod
    def load(cls, path: Path) -> Credentials:
        document = json.loads(path.read_text())
        return cls(user=document["user"], password=document["password"])


def agent_role(agent: str) -> str:
    return f"agent-{agent}"


def ephemeral_consumers(stream: str) -> list[str]:
    """What creating and deleting an ordered (ephemeral) consumer on ``stream`` publishes."""
    return [
        f"{JS}.CONSUMER.CREATE.{stream}",
        f"{JS}.CONSUMER.CREATE.{stream}.>",
        f"{JS}.CONSUMER.DELETE.{stream}.>",
    ]


def permissions(role: str, subjects: Subjects) -> dict[str, Any]:
    """The publish and subscribe allow-lists of one role; anything else is refused."""
    p = subjects.prefix
    inbox = f"_INBOX_{role}.>"
    if role == "runtime":
        return {
            "publish": [
                f"{p}.events.>",
                f"{p}.evidence.>",
                f"{p}.handoff.>",
                f"{p}.escalation.>",
                f"{p}.deadletter.>",
                f"{p}.security.>",
                f"{p}.tool.>",
                f"{JS}.>",
                "$JS.FC.>",
                f"$O.{subjects.artifact_bucket}.>",  # artifacts: the runtime alone stores them
            ],
            "subscribe": [f"{p}.rt.>", f"{p}.events.>", "$JS.EVENT.ADVISORY.>", inbox],
            "allow_responses": True,
        }
    if role == "tools":
        # Besides answering calls, only the keys of the shared idempotency journal:
        # look the bucket up, read a key, and compare-and-set it (a publish on $KV).
        journal = subjects.journal_bucket
        return {
            "publish": [
                f"{JS}.STREAM.INFO.KV_{journal}",
                f"{JS}.STREAM.MSG.GET.KV_{journal}",
                f"{JS}.DIRECT.GET.KV_{journal}.>",
                f"$KV.{journal}.>",
            ],
            "subscribe": [f"{p}.tool.>", inbox],
            "allow_responses": True,
        }
    if role == "auditor":
        return {"publish": [], "subscribe": [f"{p}.audit.>", f"{p}.evidence.>", inbox]}
    if role == "cli":
        readable = [subjects.stream(kind) for kind in ("events", "evidence", "escalation")]
        return {
            "publish": [
                f"{p}.rt.cli.>",  # artifacts too, through the runtime
                f"{JS}.STREAM.NAMES",  # which stream a subject is in, for its consumers
                "$JS.FC.>",  # ordered consumers' flow control
                *(f"{JS}.STREAM.INFO.{stream}" for stream in readable),
                *(subject for stream in readable for subject in ephemeral_consumers(stream)),
            ],
            "subscribe": [inbox],
        }
    return agent_permissions(role.removeprefix("agent-"), subjects)


def agent_permissions(agent: str, subjects: Subjects) -> dict[str, Any]:
    """An agent asks the runtime, and fetches and acknowledges its own inbox: nothing else.

    No consumer, stream or account information, no consumer creation (a push consumer's
    deliver subject is not checked against its creator's rights, so one could deliver
    anything to the tool subjects), no object store: its inbox consumer is made by the
    runtime, and artifacts are read and written through the runtime, which checks that
    the agent takes part in their workflow.
    """
    stream, durable = subjects.stream("handoff"), agent_role(agent)  # its inbox consumer
    return {
        "publish": [
            f"{subjects.prefix}.rt.{agent}.>",
            f"{JS}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ],
        "subscribe": [f"_INBOX_{agent_role(agent)}.>"],
    }


def ensure_credentials(directory: Path, roles: list[str]) -> dict[str, Path]:
    """One credentials file per role (mode 0600), created once and kept across restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = {}
    for role in roles:
        path = directory / f"{role}.json"
        if not path.exists():
            secret = json.dumps({"user": role, "password": secrets.token_urlsafe(24)})
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secret)
        paths[role] = path
    return paths


def authorization_config(credentials: dict[str, Path], subjects: Subjects) -> str:
    """The nats-server ``authorization`` block for these roles."""
    users = []
    for role, path in sorted(credentials.items()):
        creds = Credentials.load(path)
        allowed = permissions(role, subjects)
        publish = {"allow": allowed["publish"]} if allowed["publish"] else {"deny": [">"]}
        rules: dict[str, Any] = {"publish": publish, "subscribe": {"allow": allowed["subscribe"]}}
        if allowed.get("allow_responses"):
            # Many responses per request: a runtime replica's "still working" messages
            # (:mod:`bus.transport.retry`) and then its reply, within a long tool call.
            rules["allow_responses"] = {"max": 1000, "expires": "10m"}
        users.append({"user": creds.user, "password": creds.password, "permissions": rules})
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"
