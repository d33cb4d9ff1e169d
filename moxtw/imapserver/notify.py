"""NOTIFY (RFC 5465): which changes a session asked to hear about, without IDLE.

``NotifySpec`` is a NOTIFY SET command's event groups, checked and ready to match
changes against. The session (``moxtw.imapserver.session``) sends what matches:

- the selected mailbox, with a ``selected`` group: EXISTS, EXPUNGE and FETCH as soon as
  they happen, also between commands (RFC 5465 5.1-5.3), new messages with the group's
  FETCH attributes; with ``selected-delayed``, or with no selected group, as IMAP does
  without NOTIFY: at the end of a command that may report them;
- other mailboxes: STATUS for new, expunged and changed messages (RFC 5465 5.1-5.3);
- MailboxName: LIST for created, deleted (\\NonExistent) and renamed (OLDNAME)
  mailboxes (5.4); SubscriptionChange: LIST with or without \\Subscribed (5.5);
  MailboxMetadataChange and ServerMetadataChange: METADATA with the entry names (5.6,
  5.7).

Changes a session made itself are not echoed back to it. AnnotationChange (message
annotations, RFC 5257) is not built: NO [BADEVENT] (the parser refuses it).
"""

from dataclasses import dataclass

MESSAGE_EVENTS = frozenset(("MessageNew", "MessageExpunge", "FlagChange"))
SELECTED_FILTERS = frozenset(("SELECTED", "SELECTED-DELAYED"))


class NotifyError(Exception):
    """A NOTIFY SET that is well-formed but not allowed (answered BAD)."""


@dataclass(frozen=True)
class Group:
    filter: str  # upper-case: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, SUBTREE-ONE, MAILBOXES
    mailboxes: tuple  # names for SUBTREE, SUBTREE-ONE and MAILBOXES
    events: frozenset | None  # None: NONE, no events from these mailboxes
    fetch: tuple = ()  # FETCH attributes for MessageNew (selected groups only)


class NotifySpec:
    """The event groups of one NOTIFY SET. ``groups`` as the parser gives them:
    [(filter, [names] or None, [(event, [FetchAtt] or None)] or None)], names already
    in their stored form."""

    def __init__(self, groups):
        self.groups = []
        self.selected = None  # the selected group, if any
        for filt, names, events in groups:
            evs = None if events is None else frozenset(e for e, _ in events)
            fetch = ()
            for e, atts in events or ():
                if atts:
                    if filt not in SELECTED_FILTERS:
                        # RFC 5465 5.1: FETCH attributes only for the selected mailbox.
                        raise NotifyError("MessageNew with FETCH attributes is only for selected or selected-delayed")
                    fetch = tuple(atts)
            group = Group(filt, tuple(names or ()), evs, fetch)
            if filt in SELECTED_FILTERS:
                if self.selected is not None:
                    # RFC 5465 6: at most one of selected and selected-delayed.
                    raise NotifyError("selected or selected-delayed may be given only once")
                if evs and not evs <= MESSAGE_EVENTS:
                    # RFC 5465 6: only message events for the selected mailbox.
                    raise NotifyError("only message events for selected and selected-delayed")
                self.selected = group
            self.groups.append(group)

    @property
    def immediate(self):
        """Whether the selected mailbox's changes go out at once (``selected``)."""
        g = self.selected
        return g is not None and g.filter == "SELECTED" and bool(g.events)

    @property
    def new_fetch(self):
        """FETCH attributes to send with new messages in the selected mailbox."""
        g = self.selected
        return g.fetch if g is not None and g.events and "MessageNew" in g.events else ()

    def wants(self, name, event, *, inboxes=frozenset(), subscribed=frozenset()):
        """Whether ``event`` in the mailbox ``name`` (not the selected one for message
        events) is to be sent. The groups are looked at in order: one that matches the
        mailbox with NONE ends the search (RFC 5465 6: no events from there), one that
        matches without the event lets a later group decide."""
        for g in self.groups:
            if g.filter in SELECTED_FILTERS:
                continue  # the selected mailbox's events are the session's to route
            if not _matches(g, name, inboxes, subscribed):
                continue
            if g.events is None:
                return False
            if event in g.events:
                return True
        return False

    def status_events(self, name, **ctx):
        """The message events wanted for the (not selected) mailbox ``name``."""
        return {e for e in MESSAGE_EVENTS if self.wants(name, e, **ctx)}


def _matches(group, name, inboxes, subscribed):
    f = group.filter
    if f == "PERSONAL":
        return True  # one namespace: every mailbox of the account (RFC 5465 6)
    if f == "INBOXES":
        return name in inboxes or name == "Inbox" or name.startswith("Inbox/")
    if f == "SUBSCRIBED":
        return name in subscribed
    if f == "MAILBOXES":
        return name in group.mailboxes
    if f == "SUBTREE":
        return any(name == m or name.startswith(m + "/") for m in group.mailboxes)
    if f == "SUBTREE-ONE":
        # RFC 7377 2: the mailbox and its children one level down.
        return any(name == m or (name.startswith(m + "/") and "/" not in name[len(m) + 1:])
                   for m in group.mailboxes)
    return False


def status_items(events, *, condstore, initial):
    """STATUS items for a mailbox's message events: what a client needs to update its
    counts (RFC 5465 5.1-5.3). ``initial``: the STATUS of NOTIFY SET STATUS, which
    gives exactly what each event needs (as Dovecot does)."""
    items = []
    if "MessageNew" in events or "MessageExpunge" in events:
        items.append("MESSAGES")
    if "MessageNew" in events or (not initial and "MessageExpunge" in events):
        items.append("UIDNEXT")
    if "MessageNew" in events or "FlagChange" in events:
        items.append("UIDVALIDITY")
    if "FlagChange" in events or (condstore and not initial):
        items.append("HIGHESTMODSEQ")
    if not initial:
        items.append("UNSEEN")
    return items
