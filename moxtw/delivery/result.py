"""The outcome of one delivery attempt to one recipient, as the queue records it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one delivery attempt to one recipient (local or remote)."""

    ok: bool
    permanent: bool = False
    error: str = ""
    requeued: tuple = ()  # ids of new queue entries for the recipients still to deliver
