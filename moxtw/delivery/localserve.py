"""localserve's test addresses: a localpart asks for an error at an SMTP stage or at
delivery from the queue, as with mox's localserve, so applications can test how they
handle failures."""

import re
from dataclasses import dataclass

from moxtw.smtp import codes as c


@dataclass
class LocalserveRule:
    """A localserve test behaviour chosen by a recipient's (or sender's) localpart."""

    stage: str  # "mailfrom", "rcptto", "data" or "queue"
    code: object  # reply code, or None for "timeout" (no reply)
    queue: bool = False  # accepted, fails at delivery from the queue


_CODE_SUFFIX = re.compile(r"([45][0-9][0-9])$")


def localserve_rule(localpart):
    """mox localserve's rules: ...temperror (451), ...permerror (550), ...NNN (that code),
    ...timeout (no reply); at MAIL/RCPT when the localpart starts with mailfrom/rcptto,
    else at DATA. A localpart starting with "queue" fails only at delivery from the
    queue."""
    lp = localpart.lower()
    if lp.startswith("queue"):
        return LocalserveRule("queue", c.C550_MAILBOX_UNAVAILABLE, queue=True)
    stage = "mailfrom" if lp.startswith("mailfrom") else "rcptto" if lp.startswith("rcptto") else "data"
    if lp.endswith("temperror"):
        return LocalserveRule(stage, c.C451_LOCAL_ERROR)
    if lp.endswith("permerror"):
        return LocalserveRule(stage, c.C550_MAILBOX_UNAVAILABLE)
    if lp.endswith("timeout"):
        return LocalserveRule(stage, None)
    m = _CODE_SUFFIX.search(lp)
    if m:
        return LocalserveRule(stage, int(m.group(1)))
    return None
