"""Exceptions of the store. Protocol code maps them to replies (NO [TRYCREATE], 452 ...)."""


class StoreError(Exception):
    """Base class."""


class MailboxNotFound(StoreError):
    """No mailbox by that name (IMAP: NO [TRYCREATE] / [NONEXISTENT])."""


class MailboxExists(StoreError):
    """A mailbox by that name exists already (IMAP: NO [ALREADYEXISTS])."""


class MailboxNameError(StoreError):
    """The name is not acceptable as a mailbox name."""


class MailboxHasChildren(StoreError):
    """DELETE of a mailbox with children (IMAP: NO [HASCHILDREN])."""


class MailboxNotAllowed(StoreError):
    """The operation is not allowed on this mailbox (deleting Inbox)."""


class FlagError(StoreError):
    """An invalid flag or keyword."""


class QuotaExceeded(StoreError):
    """The account's quota would be exceeded (SMTP 452/552, IMAP NO [OVERQUOTA])."""

    def __init__(self, used, size, limit):
        super().__init__(
            f"quota exceeded: {used} bytes used, message of {size} bytes, limit {limit}"
        )
        self.used = used
        self.size = size
        self.limit = limit


class NoSuchMessage(StoreError):
    """A referenced message does not exist (any more)."""


class AccountNameError(StoreError):
    """Not a valid account name."""


class OutgoingLimitExceeded(StoreError):
    """A daily sending limit of the account would be exceeded; ``field`` names the config
    setting (MaxOutgoingMessagesPerDay or MaxFirstTimeRecipientsPerDay)."""

    def __init__(self, field, limit):
        super().__init__(f"daily limit reached ({field} = {limit})")
        self.field = field
        self.limit = limit


class MetadataTooLarge(StoreError):
    """A METADATA value over the limit (IMAP: NO [METADATA MAXSIZE n])."""

    def __init__(self, limit):
        super().__init__(f"metadata value larger than {limit} bytes")
        self.limit = limit


class MetadataTooMany(StoreError):
    """More METADATA entries than the account may have (IMAP: NO [METADATA TOOMANY])."""
