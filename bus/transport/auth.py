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

Two credential formats carry these permissions: a deployment's NATS users with JWTs in
``.creds`` files (:mod:`bus.transport.identities`, ``claimcheck auth init``), and, for the
embedded server of ``claimcheck up``, one random password per role in a JSON file, which
the server's configuration holds only as a bcrypt hash.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt

from bus.transport.subjects import Subjects

JS = "$JS.API"


RESPONSES = {"max": 1000, "expires_seconds": 600}
"""Responses a role with ``allow_responses`` may send per request: a runtime replica's
"still working" messages (:mod:`bus.transport.retry`) and then its reply, within a long
tool call."""

BCRYPT_ROUNDS = 8
"""The passwords are 192 random bits, which no guessing reaches at any cost factor; the
hash only keeps them out of the server's configuration, and each connection pays for it."""


@dataclass(frozen=True)
class Credentials:
    """One role's NATS identity: a user JWT's ``.creds`` file, or a user and password."""

    user: str
    password: str = ""
    creds_file: Path | None = None

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.user}"

    def connect_options(self) -> dict[str, Any]:
        """What ``nats.connect`` needs to authenticate as this role."""
        if self.creds_file is not None:
            secret: dict[str, Any] = {"user_credentials": str(self.creds_file)}
        else:
            secret = {"user": self.user, "password": self.password}
        return {**secret, "inbox_prefix": self.inbox_prefix}

    @classmethod
    def load(cls, path: Path) -> Credentials:
        if path.suffix == ".creds":
            return cls(user=creds_user(path), creds_file=path)
        document = json.loads(path.read_text())
        return cls(user=document["user"], password=document["password"])


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; we only read a user's name)."""
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def creds_user(path: Path) -> str:
    """The role a ``.creds`` file's user JWT names."""
    lines = path.read_text().splitlines()
    try:
        token = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
        return decode_claims(token)["name"]
    except (ValueError, IndexError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a NATS user credentials file: {error}") from None


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read (mode 0600 from the start)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


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
                f"$KV.{subjects.lease_bucket}.>",  # which relay replica publishes
            ],
            "subscribe": [f"{p}.rt.>", f"{p}.events.>", "$JS.EVENT.ADVISORY.>", inbox],
            "allow_responses": True,
        }
    if role == "tools":
        # Besides answering calls, only the keys of the shared idempotency journal and of
        # the tool registry: look a bucket up, read a key, and set it (a publish on $KV).
        buckets = (subjects.journal_bucket, subjects.registry_bucket)
        return {
            "publish": [
                subject
                for bucket in buckets
                for subject in (
                    f"{JS}.STREAM.INFO.KV_{bucket}",
                    f"{JS}.STREAM.MSG.GET.KV_{bucket}",
                    f"{JS}.DIRECT.GET.KV_{bucket}.>",
                    f"$KV.{bucket}.>",
                )
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
            write_secret(path, json.dumps({"user": role, "password": secrets.token_urlsafe(24)}))
        paths[role] = path
    return paths


def authorization_config(credentials: dict[str, Path], subjects: Subjects) -> str:
    """The nats-server ``authorization`` block for these roles, with bcrypt-hashed passwords."""
    users = []
    for role, path in sorted(credentials.items()):
        creds = Credentials.load(path)
        allowed = permissions(role, subjects)
        publish = {"allow": allowed["publish"]} if allowed["publish"] else {"deny": [">"]}
        rules: dict[str, Any] = {"publish": publish, "subscribe": {"allow": allowed["subscribe"]}}
        if allowed.get("allow_responses"):
            expires = f"{RESPONSES['expires_seconds']}s"
            rules["allow_responses"] = {"max": RESPONSES["max"], "expires": expires}
        hashed = bcrypt.hashpw(creds.password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
        users.append({"user": creds.user, "password": hashed, "permissions": rules})
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"
