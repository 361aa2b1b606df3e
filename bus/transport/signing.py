"""Ed25519 signatures on the messages that carry authority: tool calls and evidence records.

nats-server cannot prove who published a message (a push consumer delivers wherever its
creator says), so subject permissions alone do not make a message the runtime's. The
runtime signs every tool call and every evidence record with its own key; a tool host
executes only calls with a valid runtime signature that has not expired, and ``verify``
and ``audit follow`` accept only evidence the runtime signed. An evidence signature covers
the record's hash, which covers every other field and the previous record's hash, so the
chain also holds against someone who can write the ledger database.

The key is an nkeys user seed (``nkeys`` is NATS's Ed25519 key format): the runtime's at
``<state>/credentials/runtime.nk`` (mode 0600, created on first start), its public key at
``<state>/runtime.pub``. The public key (``CLAIMCHECK_RUNTIME_PUBLIC_KEY``, or that file)
is all a tool host or a third-party auditor needs.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import msgspec
import nacl.exceptions
import nacl.signing
import nkeys

from bus.settings import Settings

SEED_FILE = "runtime.nk"
PUBLIC_FILE = "runtime.pub"


def signed_bytes(record: dict[str, Any]) -> bytes:
    """What a signature covers: the record's canonical JSON without its ``signature``."""
    body = {key: value for key, value in record.items() if key != "signature"}
    return msgspec.json.encode(body, order="sorted")


class Signer:
    """The runtime's private key."""

    def __init__(self, seed: bytes) -> None:
        self._keys = nkeys.from_seed(bytearray(seed))

    @property
    def public_key(self) -> str:
        return bytes(self._keys.public_key).decode()

    def sign(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(self._keys.sign(data)).decode()


class Verifier:
    """Checks signatures with the runtime's public key alone."""

    def __init__(self, public_key: str) -> None:
        try:
            raw = base64.b32decode(public_key.strip())
        except (binascii.Error, ValueError):
            raise ValueError(f"not an nkeys public key: {public_key!r}") from None
        if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
            raise ValueError(f"not an nkeys user public key: {public_key!r}")
        if nkeys.crc16(bytearray(raw[:-2])) != int.from_bytes(raw[-2:], "little"):
            raise ValueError(f"public key {public_key!r} fails its checksum")
        self.public_key = public_key.strip()
        self._key = nacl.signing.VerifyKey(raw[1:33])

    def verify(self, data: bytes, signature: object) -> bool:
        if not isinstance(signature, str) or not signature:
            return False
        try:
            self._key.verify(data, base64.urlsafe_b64decode(signature))
        except (nacl.exceptions.BadSignatureError, binascii.Error, ValueError):
            return False
        return True


def runtime_signer(settings: Settings) -> Signer:
    """The runtime's key: created on first start, then kept; its public key is published
    beside the state (``<state>/runtime.pub``) for tool hosts and auditors."""
    path = settings.signing_key or settings.state_dir / "credentials" / SEED_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # another start (or replica) created it first
    else:
        with os.fdopen(descriptor, "wb") as file:
            file.write(bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)))
    signer = Signer(path.read_bytes().strip())
    public = settings.state_dir / PUBLIC_FILE
    if not public.exists() or public.read_text().strip() != signer.public_key:
        public.write_text(signer.public_key + "\n")
    return signer


def runtime_verifier(settings: Settings) -> Verifier | None:
    """The runtime's public key, if this process can know it: the setting, else the file."""
    key = settings.runtime_public_key
    public = settings.state_dir / PUBLIC_FILE
    if not key and public.exists():
        key = public.read_text().strip()
    return Verifier(key) if key else None
