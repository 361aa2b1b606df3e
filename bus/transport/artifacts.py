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

import base64
import hashlib
import json
from collections import OrderedDict
from datetime import UTC, datetime
from uuid import uuid4

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import OBJ_DIGEST_TEMPLATE, ObjectStore

from bus.transport.publishing import BulkPublisher


class ArtifactError(Exception):
    pass


def artifact_id(data: bytes) -> str:
    return f"sha256-{hashlib.sha256(data).hexdigest()}"


CHUNK_SIZE = 128 * 1024
"""The object store's default chunk size, as its own ``put`` writes."""
WRITE_TIMEOUT = 10.0
"""Seconds an artifact's publishes may wait for their acknowledgements."""


class ArtifactStore:
    def __init__(self, nc: Client, bucket: str, cache_bytes: int = 0) -> None:
        self._js = nc.jetstream()
        self._publisher = BulkPublisher(nc)
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
        await self._write(identifier, data)
        self._remember(identifier, data)
        return identifier

    async def _write(self, name: str, data: bytes) -> None:
        """Write an object as the object store's ``put`` does (its chunks, then its meta
        rolling up any earlier meta), every publish sent at once and acknowledged together.

        The store's own ``put`` looks the name up first and waits for each publish in turn:
        three round trips per artifact, two of them behind an fsync, on every tool step. An
        artifact already stored (not in this replica's cache) is written again, the same
        bytes; its earlier chunks stay, unreferenced.
        """
        nuid = uuid4().hex
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        info = api.ObjectInfo(
            name=name,
            bucket=self._bucket,
            nuid=nuid,
            size=len(data),
            chunks=len(chunks),
            mtime=datetime.now(UTC).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(
                digest=base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
            ),
            options=api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE),
        )
        encoded_name = base64.urlsafe_b64encode(name.encode()).decode()
        messages = [
            *((f"$O.{self._bucket}.C.{nuid}", chunk, None) for chunk in chunks),
            (
                f"$O.{self._bucket}.M.{encoded_name}",
                json.dumps(info.as_dict()).encode(),
                {api.Header.ROLLUP: MSG_ROLLUP_SUBJECT},
            ),
        ]
        for error in await self._publisher.publish_all(messages, WRITE_TIMEOUT):
            if error is not None:
                raise error

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
