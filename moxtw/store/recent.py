"""\\Recent for IMAP4rev1 sessions (RFC 3501 2.3.2): a message is recent in the one session
that is first told of it; IMAP4rev2 (RFC 9051) dropped the flag.

Per account, on the reactor thread: the UIDs added to each mailbox that no session has
claimed yet. A session that SELECTs a mailbox (read-write, IMAP4rev1) claims all of them;
one that has it selected claims each new message as it is told of it, if no other
session did first. EXAMINE and STATUS look without claiming. Expunged UIDs are dropped.

The state is in memory: messages that arrived before the server (re)started are not
recent. It grows with messages delivered to a mailbox no IMAP4rev1 client selects, so
each mailbox keeps at most MAX_UNCLAIMED (the oldest are dropped: no longer recent).
"""

import array
import bisect

from moxtw.store import changes as ch

MAX_UNCLAIMED = 100_000


class RecentTracker:
    def __init__(self):
        self._unclaimed = {}  # mailbox id -> array of UIDs, ascending

    def changed(self, changes):
        """A ChangeBus subscriber: new UIDs are unclaimed, expunged ones forgotten."""
        for c in changes:
            if isinstance(c, ch.ChangeAddUID):
                a = self._unclaimed.setdefault(c.mailbox_id, array.array("I"))
                if not a or c.uid > a[-1]:
                    a.append(c.uid)
                    if len(a) > MAX_UNCLAIMED:
                        del a[: len(a) - MAX_UNCLAIMED]
            elif isinstance(c, ch.ChangeRemoveUIDs):
                a = self._unclaimed.get(c.mailbox_id)
                if a:
                    gone = set(c.uids)
                    left = array.array("I", (u for u in a if u not in gone))
                    if left:
                        self._unclaimed[c.mailbox_id] = left
                    else:
                        del self._unclaimed[c.mailbox_id]
            elif isinstance(c, ch.ChangeMailboxRemove):
                self._unclaimed.pop(c.mailbox_id, None)

    def peek(self, mailbox_id):
        """The unclaimed UIDs of a mailbox (EXAMINE; STATUS RECENT counts them)."""
        return set(self._unclaimed.get(mailbox_id, ()))

    def count(self, mailbox_id):
        return len(self._unclaimed.get(mailbox_id, ()))

    def claim_all(self, mailbox_id):
        """SELECT: the unclaimed UIDs become this session's recent messages."""
        return set(self._unclaimed.pop(mailbox_id, ()))

    def claim(self, mailbox_id, uid, take=True):
        """A session told of a new message: whether it is the first (it is recent there);
        without ``take`` (EXAMINE) the message stays unclaimed."""
        a = self._unclaimed.get(mailbox_id)
        if not a:
            return False
        i = bisect.bisect_left(a, uid)
        if i == len(a) or a[i] != uid:
            return False
        if not take:
            return True
        del a[i]
        if not a:
            del self._unclaimed[mailbox_id]
        return True
