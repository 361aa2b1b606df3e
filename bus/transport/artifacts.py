"""Content-addressed artifacts in a JetStream object store (the claim check).

An artifact's id is ``sha256-<hex digest of its bytes>``; handoffs carry the id,
never the payload. Reading checks the bytes against the id, so an artifact
changed in the store is detected, not silently used.

Only the runtime reads and writes the store (agents and the operator go through its
``artifact_get`` and ``artifact_put`` operations). Artifacts never change, so the runtime
keeps the ones it read or wrote last in memory: an object-store read creates a JetStream
consumer, and one per read does not keep up with a busy bus.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore


class ArtifactError(Exception):
    pass


def artifact_id(data: bytes) -> str:
    return f"sha256-{hashlib.sha256(data).hexdigest()}"


class ArtifactStore:
    def __init__(self, js: JetStreamContext, bucket: str, cache_bytes: int = 0) -> None:
        self._js = js
        self._bucket = bucket
        self._store: ObjectStore | None = None
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self.cache_bytes = cache_bytes
        """Bytes of artifacts kept in memory, least recently used dropped first (0: none)."""

    async def put(self, data: bytes) -> str:
        """Store ``data`` under its digest; storing the same bytes again is a no-op."""
        identifier = artifact_id(data)
        if identifier in self._cache:
            return identifier
        # No look first: the object store's put looks itself (storing bytes that are there
        # already rewrites the same bytes), and one round trip fewer is a tool step faster.
        await (await self._object_store()).put(identifier, data)
        self._remember(identifier, data)
        return identifier

    async def get(self, identifier: str) -> bytes:
        cached = self._cache.get(identifier)
        if cached is not None:
            self._cache.move_to_end(identifier)
            return cached
        store = await self._object_store()
        try:
            result = await store.get(identifier)
        except ObjectNotFoundError:
            raise ArtifactError(f"artifact {identifier} not found") from None
        data = result.data or b""
        if artifact_id(data) != identifier:
            raise ArtifactError(f"artifact {identifier} does not match its digest")
        self._remember(identifier, data)
        return data

    async def _object_store(self) -> ObjectStore:
        if self._store is None:
            self._store = await self._js.object_store(self._bucket)
        return self._store

    def _remember(self, identifier: str, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        self._cache[identifier] = data
        self._cached += len(data)
        while self._cached > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= len(dropped)
