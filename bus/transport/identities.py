"""A deployment's NATS identities the NATS way: an operator, an account and one user per role.

``claimcheck auth init`` writes them; nats-server runs in operator mode and trusts the
operator, so it needs only public JWTs (``nats-auth.conf``: the operator, the account and
the system account, preloaded into a memory resolver) and never holds a secret. Each role
connects with its own ``.creds`` file (its user JWT and nkey seed), whose JWT carries the
role's subject permissions from :func:`bus.transport.auth.permissions`, signed by the
account. Adding an agent is one more user JWT signed by the account key: the servers need
no change and no restart. Anything without a valid user JWT is refused: there is no
anonymous access.

The JWTs are the ``nats-io/jwt`` v2 format (an Ed25519 signature over
``header.claims``), encoded here with ``nkeys`` instead of a JWT library: the format is
small, and ``nkeys`` already signs for us (:mod:`bus.transport.signing`).

Directory layout (secrets mode 0600, the directory 0700)::

    operator.nk account.nk system.nk  the signing seeds: keep them offline after issuing
    nats-auth.conf                    public: include it in every nats-server's config
    <role>.creds                      one per role: mount each only where that role runs
    runtime.nk runtime.pub            the runtime's message-signing key and its public half
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

from bus.transport.auth import RESPONSES, permissions, write_secret
from bus.transport.signing import PUBLIC_FILE, SEED_FILE, Signer
from bus.transport.subjects import Subjects

AUTH_CONFIG = "nats-auth.conf"
OPERATOR_SEED = "operator.nk"
ACCOUNT_SEED = "account.nk"
SYSTEM_SEED = "system.nk"
ACCOUNT_NAME = "CLAIMCHECK"
UNLIMITED = -1

CREDS_TEMPLATE = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_key(keys: nkeys.KeyPair) -> str:
    return bytes(keys.public_key).decode()


def encode_jwt(name: str, subject: str, issuer: nkeys.KeyPair, nats: dict[str, Any]) -> str:
    """A signed nats-io/jwt v2 token: ``name`` and ``subject`` (a public key), issued by
    ``issuer``, with the NATS-specific ``nats`` claims (type, permissions, limits)."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": public_key(issuer),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = f"{header}.{_b64(json.dumps(claims).encode())}"
    return f"{body}.{_b64(issuer.sign(body.encode()))}"


def _seed(directory: Path, name: str, prefix: int) -> nkeys.KeyPair:
    """The key kept in ``directory/name``: made on first use, then always the same."""
    path = directory / name
    if not path.exists():
        write_secret(path, bytes(nkeys.encode_seed(os.urandom(32), prefix)).decode())
    return nkeys.from_seed(bytearray(path.read_bytes().strip()))


def user_permissions(role: str, subjects: Subjects) -> dict[str, Any]:
    """A role's :func:`permissions` as user JWT claims."""
    allowed = permissions(role, subjects)
    claims: dict[str, Any] = {
        "pub": {"allow": allowed["publish"]} if allowed["publish"] else {"deny": [">"]},
        "sub": {"allow": allowed["subscribe"]},
    }
    if allowed.get("allow_responses"):
        ttl_nanoseconds = RESPONSES["expires_seconds"] * 1_000_000_000
        claims["resp"] = {"max": RESPONSES["max"], "ttl": ttl_nanoseconds}
    return claims


class Identities:
    """The issued identities of one deployment, kept in one directory."""

    def __init__(self, directory: Path, subjects: Subjects) -> None:
        self.directory = directory
        self.subjects = subjects
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.operator = _seed(directory, OPERATOR_SEED, nkeys.PREFIX_BYTE_OPERATOR)
        self.account = _seed(directory, ACCOUNT_SEED, nkeys.PREFIX_BYTE_ACCOUNT)
        self.system = _seed(directory, SYSTEM_SEED, nkeys.PREFIX_BYTE_ACCOUNT)

    def creds_path(self, role: str) -> Path:
        return self.directory / f"{role}.creds"

    def issue(self, roles: list[str]) -> dict[str, Path]:
        """``.creds`` for each role that has none yet (existing ones are kept), the server's
        ``nats-auth.conf`` and the runtime's signing key; returns role -> creds path."""
        self.write_server_config()
        self.ensure_signing_key()
        for role in roles:
            if not self.creds_path(role).exists():
                self.add_user(role)
        return {role: self.creds_path(role) for role in roles}

    def add_user(self, role: str) -> Path:
        """A new user JWT for ``role``, signed by the account: no server change needed."""
        user = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        nats = {
            "type": "user",
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            **user_permissions(role, self.subjects),
        }
        token = encode_jwt(role, public_key(user), self.account, nats)
        seed = bytes(user.seed).decode()
        write_secret(self.creds_path(role), CREDS_TEMPLATE.format(jwt=token, seed=seed))
        return self.creds_path(role)

    def account_jwt(self, name: str, keys: nkeys.KeyPair, jetstream: bool) -> str:
        limits: dict[str, Any] = {
            "subs": UNLIMITED,
            "conn": UNLIMITED,
            "leaf": UNLIMITED,
            "imports": UNLIMITED,
            "exports": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            "wildcards": True,
        }
        if jetstream:  # unlimited storage switches JetStream on for the account
            limits |= {"mem_storage": UNLIMITED, "disk_storage": UNLIMITED}
            limits |= {"streams": UNLIMITED, "consumer": UNLIMITED}
        nats = {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
        return encode_jwt(name, public_key(keys), self.operator, nats)

    def server_config(self) -> str:
        """The operator-mode block every nats-server of the deployment includes."""
        system = public_key(self.system)
        operator = encode_jwt(
            "claimcheck",
            public_key(self.operator),
            self.operator,
            {"type": "operator", "system_account": system},
        )
        preload = {
            public_key(self.account): self.account_jwt(ACCOUNT_NAME, self.account, True),
            system: self.account_jwt("SYS", self.system, False),
        }
        entries = "".join(f"  {key}: {jwt}\n" for key, jwt in preload.items())
        return (
            "# Written by `claimcheck auth init`: public JWTs only, no secrets.\n"
            f"operator: {operator}\n"
            f"system_account: {system}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{entries}}}\n"
        )

    def write_server_config(self) -> Path:
        path = self.directory / AUTH_CONFIG
        if not path.exists():  # the same JWTs on every call keep all servers in agreement
            path.write_text(self.server_config())
        return path

    def ensure_signing_key(self) -> None:
        """The runtime's message-signing key, shared by all its replicas, and its public key
        for tool hosts and auditors (:mod:`bus.transport.signing`)."""
        path = self.directory / SEED_FILE
        if not path.exists():
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            write_secret(path, bytes(seed).decode())
        signer = Signer(path.read_bytes().strip())
        (self.directory / PUBLIC_FILE).write_text(signer.public_key + "\n")
