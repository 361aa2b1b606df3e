"""The ledger: the ``Workflow`` aggregate and the event store that holds it, and what reads
that store (the relay to the streams, verification, replay, the read-model feed)."""

from bus.ledger.errors import LedgerError, UnknownWorkflow
from bus.ledger.store import Ledger
from bus.ledger.workflow import GENESIS_HASH, Workflow

__all__ = ["GENESIS_HASH", "Ledger", "LedgerError", "UnknownWorkflow", "Workflow"]
