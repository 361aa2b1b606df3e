"""Reading the whole ledger in position order, in pages, as event envelopes.

``verify`` and ``views rebuild`` read every event once. Through eventsourcing's mapper
each event becomes a domain event object (Python's ``json`` with an object hook for every
dict, then ``vars``) only to be turned back into plain data for its envelope: two thirds
of the time went there. :class:`EnvelopeReader` decodes a stored event's JSON with
msgspec straight into the envelope's data, converting the transcoder's few typed values
(``{"_type_": ..., "_data_": ...}``) through the ledger's own transcodings, so the result
is the same envelope :meth:`Ledger.envelope` gives. The relay reads its events through it
too. Events the fast path cannot read exactly (encrypted or compressed state, an upcast
class version) go through the mapper.

Memory is one page of notifications at a time, whatever the ledger's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import Notification
from eventsourcing.utils import resolve_topic

from bus.ledger.store import Ledger
from handoff_schemas import EventEnvelope

PAGE = 2000
"""Notifications read per query: large enough that a query's cost is spread thin."""

_decode = msgspec.json.Decoder()


def pages(ledger: Ledger, after: int = 0, page: int | None = None) -> Iterator[list[Notification]]:
    """The ledger's notifications after position ``after``, a page (``PAGE``) at a time."""
    while batch := ledger.notifications(after, page or PAGE):
        yield batch
        after = batch[-1].id


class EnvelopeReader:
    """Stored events to :class:`EventEnvelope`, fast: what the relay publishes, ``verify``
    checks and the views apply."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        mapper = ledger.mapper
        self._exact = mapper.cipher is None and mapper.compressor is None
        self._transcodings = getattr(mapper.transcoder, "names", {})
        self._names: dict[str, str | None] = {}  # topic -> event name, None: use the mapper

    def envelope(self, notification: Notification) -> EventEnvelope:
        name = self.event_name(notification.topic)
        if name is None:
            return self.slow(notification)
        state = _decode.decode(notification.state)
        if "class_version" in state:
            return self.slow(notification)
        stamp = state.pop("timestamp")
        state.pop("originator_topic", None)
        if notification.state.count(b'"_type_"') > 1:
            state = self._builtins(state)  # a typed value beyond the timestamp: rare
        return EventEnvelope(
            position=notification.id,
            workflow_id=str(notification.originator_id),
            version=notification.originator_version,
            type=name,
            timestamp=self._timestamp(stamp),
            data=state,
        )

    def envelopes(self, after: int = 0, page: int | None = None) -> Iterator[EventEnvelope]:
        """Every event after position ``after``, in ledger order."""
        for batch in pages(self.ledger, after, page):
            for notification in batch:
                yield self.envelope(notification)

    def slow(self, notification: Notification) -> EventEnvelope:
        """Through eventsourcing's mapper: always right, three times slower."""
        domain_event = self.ledger.mapper.to_domain_event(notification)
        return self.ledger.envelope(domain_event, position=notification.id)

    def _timestamp(self, stamp: Any) -> Any:
        if type(stamp) is dict and stamp.get("_type_") == "datetime_iso":
            return datetime.fromisoformat(stamp["_data_"])  # as DatetimeAsISO decodes it
        return self._typed(stamp)

    def event_name(self, topic: str) -> str | None:
        """The event type a topic names, or None when the fast path cannot read its events."""
        if topic not in self._names:
            cls = resolve_topic(topic)
            fast = self._exact and getattr(cls, "class_version", 1) == 1
            self._names[topic] = cls.__name__ if fast else None
        return self._names[topic]

    def _typed(self, value: Any) -> Any:
        """A transcoded value (``{"_type_", "_data_"}``) as the object the mapper gives."""
        if isinstance(value, dict) and len(value) == 2 and "_type_" in value and "_data_" in value:
            transcoding = self._transcodings.get(value["_type_"])
            if transcoding is not None:
                return transcoding.decode(self._typed(value["_data_"]))
        return value

    def _builtins(self, value: Any) -> Any:
        """``value`` with every transcoded value as ``msgspec.to_builtins`` renders the object."""
        if isinstance(value, dict):
            typed = self._typed(value)
            if typed is not value:
                return msgspec.to_builtins(typed)
            return {key: self._builtins(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._builtins(item) for item in value]
        return value
