"""Automatic $Junk / $NotJunk keywords from where messages are put.

Users train the junk filter by moving messages: into Junk means "this is junk", out of
Junk into Inbox, Archive or Trash means "this is not". The store records that as the
keywords $junk and $notjunk on the message (the junk filter trains from them later).

Without configuration (AutomaticJunkFlags disabled), only those moves count. With
AutomaticJunkFlags enabled, the mailbox name (lower-cased) decides on every delivery, move
and copy, as in mox: JunkMailboxRegexp, then NeutralMailboxRegexp (neither keyword), then
NotJunkMailboxRegexp; with two expressions set, the third matches everything else.
"""

import re

JUNK = "$junk"
NOTJUNK = "$notjunk"


class JunkFlagRules:
    def __init__(self, enabled=False, junk=None, neutral=None, notjunk=None):
        self.enabled = enabled
        self.junk = re.compile(junk) if junk else None
        self.neutral = re.compile(neutral) if neutral else None
        self.notjunk = re.compile(notjunk) if notjunk else None

    @classmethod
    def from_config(cls, cfg):
        if cfg is None:
            return cls()
        return cls(cfg.Enabled, cfg.JunkMailboxRegexp, cfg.NeutralMailboxRegexp, cfg.NotJunkMailboxRegexp)

    def verdict(self, dest_name, dest_use, source_use=None, moved=True):
        """"junk", "notjunk", "neutral", or None to leave the keywords alone."""
        if self.enabled:
            name = dest_name.lower()
            rules = [(self.junk, "junk"), (self.neutral, "neutral"), (self.notjunk, "notjunk")]
            set_rules = [rx for rx, _ in rules if rx is not None]
            for rx, what in rules:
                if rx is not None and rx.search(name):
                    return what
            if len(set_rules) == 2:
                return next(what for rx, what in rules if rx is None)
            return None
        if not moved:
            return None
        if dest_use == "\\Junk":
            return "junk"
        if source_use == "\\Junk" and (dest_name == "Inbox" or dest_use in ("\\Archive", "\\Trash")):
            return "notjunk"
        return None


def apply(keywords, verdict):
    """The keywords after a verdict (sorted list)."""
    kw = set(keywords)
    if verdict == "junk":
        kw.add(JUNK)
        kw.discard(NOTJUNK)
    elif verdict == "notjunk":
        kw.add(NOTJUNK)
        kw.discard(JUNK)
    elif verdict == "neutral":
        kw.discard(JUNK)
        kw.discard(NOTJUNK)
    return sorted(kw)
