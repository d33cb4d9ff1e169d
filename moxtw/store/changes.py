"""The per-account change bus and the changes it carries.

Every committed store operation publishes what it changed, in commit order, on the
reactor thread. IMAP sessions (and webmail streams later) subscribe to learn about new
messages, flag changes, expunges and mailbox changes made by other sessions, SMTP
deliveries or the web interfaces. ``origin`` is whatever the caller passed to the store
operation (an IMAP session passes itself) so a subscriber can tell its own changes apart.
"""

from dataclasses import dataclass, field

from twisted.logger import Logger

log = Logger(namespace="moxtw.store")


@dataclass(frozen=True)
class MailboxCounts:
    total: int
    unseen: int
    deleted: int
    size: int


@dataclass(frozen=True)
class ChangeAddUID:
    """A message appeared in a mailbox (delivery, APPEND, COPY, MOVE)."""

    mailbox_id: int
    uid: int
    modseq: int
    flags: tuple
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeRemoveUIDs:
    """Messages left a mailbox (EXPUNGE, MOVE away)."""

    mailbox_id: int
    uids: tuple
    modseq: int
    origin: object = field(default=None, compare=False)
    # The removed index rows, as dicts, and whether their files go (EXPUNGE) or live on
    # (MOVE): what moxtw.store.hold keeps for sessions not yet told of the removal.
    rows: tuple = field(default=(), compare=False, repr=False)
    unlink: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ChangeFlags:
    """A message's flags or keywords changed."""

    mailbox_id: int
    uid: int
    modseq: int
    flags: tuple
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMailboxCounts:
    mailbox_id: int
    name: str
    counts: MailboxCounts
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMailboxAdd:
    mailbox_id: int
    name: str
    special_use: object
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMailboxRemove:
    mailbox_id: int
    name: str
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMailboxRename:
    mailbox_id: int
    old_name: str
    new_name: str
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeSubscription:
    name: str
    subscribed: bool
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMailboxKeywords:
    """New keywords came into use in a mailbox (IMAP untagged FLAGS)."""

    mailbox_id: int
    keywords: tuple
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ChangeMetadata:
    """METADATA entries (RFC 5464) were set or removed: of a mailbox, or of the server
    (``mailbox_id`` 0, ``name`` "")."""

    mailbox_id: int
    name: str
    entries: tuple
    origin: object = field(default=None, compare=False)


class ChangeBus:
    """Fan-out of committed changes to subscribers, on the reactor thread."""

    def __init__(self):
        self._subscribers = []

    def subscribe(self, callback):
        """Call ``callback(changes)`` with each committed list of changes.

        Returns a function that unsubscribes.
        """
        self._subscribers.append(callback)

        def unsubscribe():
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def publish(self, changes):
        for callback in list(self._subscribers):
            try:
                callback(changes)
            except Exception:
                # One broken subscriber must not stop delivery of changes to the others.
                log.failure("change bus subscriber failed")

    def __len__(self):
        return len(self._subscribers)
