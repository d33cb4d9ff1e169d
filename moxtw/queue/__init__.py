"""The outgoing queue: submitted messages and DSNs waiting for delivery.

Layout under the data directory::

    queue.db          SQLite (WAL, synchronous=FULL): one row per recipient
    queue/<base id>   message file shared by the recipients of one submission
    queue/tmp/        message files being written

``Queue`` (``moxtw.queue.db``) is the persistent part: add, list, hold, schedule, drop,
record attempts; every change is durable before its Deferred fires. ``QueueService``
(``moxtw.queue.service``) runs delivery passes with an injected delivery function and
retries temporary failures with backoff. ``moxtw.queue.verify`` checks files against rows
after a crash; ``moxtw.queue.cli`` has the offline ``moxtw queue`` commands.
"""

from moxtw.queue.db import Queue, message_file
from moxtw.queue.model import EntryNotFound, QueueEntry, QueueError
from moxtw.queue.service import (
    MAX_CONCURRENT,
    RETRY_SCHEDULE,
    DeliveryResult,
    QueueService,
    retry_delay,
)

__all__ = [
    "Queue",
    "QueueEntry",
    "QueueError",
    "EntryNotFound",
    "QueueService",
    "DeliveryResult",
    "RETRY_SCHEDULE",
    "MAX_CONCURRENT",
    "retry_delay",
    "message_file",
]
