"""Content-addressed artifacts in a JetStream object store (the claim check).

An artifact's id is ``sha256-<hex digest of its bytes>``; handoffs carry the id,
never the payload. Reading checks the bytes against the id, so an artifact
changed in the store is detected, not silently used.
"""

from __future__ import annotations

import hashlib

from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError


class ArtifactError(Exception):
    pass


def artifact_id(data: bytes) -> str:
    return f"sha256-{hashlib.sha256(data).hexdigest()}"


class ArtifactStore:
    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self._bucket = bucket

    async def put(self, data: bytes) -> str:
        """Store ``data`` under its digest; storing the same bytes again is a no-op."""
        store = await self._js.object_store(self._bucket)
        identifier = artifact_id(data)
        try:
            await store.get_info(identifier)
        except ObjectNotFoundError:
            await store.put(identifier, data)
        return identifier

    async def get(self, identifier: str) -> bytes:
        store = await self._js.object_store(self._bucket)
        try:
            result = await store.get(identifier)
        except ObjectNotFoundError:
            raise ArtifactError(f"artifact {identifier} not found") from None
        data = result.data or b""
        if artifact_id(data) != identifier:
            raise ArtifactError(f"artifact {identifier} does not match its digest")
        return data
