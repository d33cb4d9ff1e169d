"""IMAP session state and command handlers (RFC 9051, RFC 3501 and extensions).

States (RFC 9051 3): not authenticated, authenticated, selected, logout. Each handler's
docstring gives the command and the states it is valid in. Handlers talk to the store
through an ``Account`` (moxtw.store.account) and never touch files or SQLite; reading
message data for FETCH and evaluating SEARCH run off the reactor thread
(moxtw.imapserver.fetch, moxtw.imapserver.search).

Live updates: the session subscribes to the account's change bus. Changes are queued and
sent as untagged responses at the end of each command (EXPUNGE and VANISHED not during
FETCH, STORE or SEARCH, RFC 9051 7.5.1) and at once during IDLE, keeping this session's
message sequence numbers consistent.
"""

import array
import base64
import bisect
import dataclasses
import itertools
import re
import time
from datetime import datetime, timezone

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from moxtw import __version__
from moxtw.auth import AuthFailed, LoginDisabled
from moxtw.imapserver import context as contextmod
from moxtw.imapserver import fetch as fetchmod
from moxtw.imapserver import imapurl
from moxtw.imapserver import notify as notifymod
from moxtw.imapserver import response as r
from moxtw.imapserver import search as searchmod
from moxtw.imapserver import urlauth
from moxtw.imapserver.fetch import FileRange
from moxtw.imapserver.types import STAR, Command, FetchAtt, SearchKey, SeqSet
from moxtw.sasl import server as sasl
from moxtw.sasl.channelbinding import channel_binding_for
from moxtw.sasl.server import server_mechanisms
from moxtw.store import changes as ch
from moxtw.store import errors as se
from moxtw.store.model import (
    INBOX,
    MAX_MAILBOX_NAME,
    Message,
    SearchCriteria,
    check_new_mailbox_name,
    normalize_mailbox_name,
)

log = Logger(namespace="moxtw.imapserver")

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "notauth", "auth", "selected", "logout"
ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
AUTH = (AUTHENTICATED, SELECTED)
SEL = (SELECTED,)

MAX_BAD = 30
FETCH_BATCH = 200  # messages rendered per thread hop
ROW_SLICE = 2000  # messages per slice of a FETCH answered from index rows
LIGHT_ITEMS = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "SAVEDATE", "PREVIEW", "FAST"}
STREAM_THRESHOLD = 256 * 1024  # body sections larger than this are streamed from the file
# RFC 9585 INPROGRESS: a command still running after INPROGRESS_FIRST seconds gets an
# untagged OK [INPROGRESS] then, and every INPROGRESS_EVERY seconds until it is done, so
# clients can show progress and know the server is working (not hung).
INPROGRESS_FIRST = 2.0
INPROGRESS_EVERY = 10.0
# Commands that wait for the client, or on purpose (failed logins are slowed down): no
# progress for them.
NO_PROGRESS = frozenset(("IDLE", "AUTHENTICATE", "LOGIN"))

_cid = itertools.count(int(time.time() * 1000) & 0xFFFFFFF)


class IMAPError(Exception):
    """A tagged NO or BAD. ``text`` may start with a response code like "[TRYCREATE]"."""

    def __init__(self, kind, text):
        super().__init__(text)
        self.kind = kind
        self.text = text


def NO(text):
    return IMAPError("NO", text)


def BAD(text):
    return IMAPError("BAD", text)


# Commands, the states they are valid in, and whether EXPUNGE may be sent after them.
COMMANDS = {
    "CAPABILITY": ANY, "NOOP": ANY, "LOGOUT": ANY, "ID": ANY,
    "STARTTLS": (NOT_AUTHENTICATED,), "AUTHENTICATE": (NOT_AUTHENTICATED,), "LOGIN": (NOT_AUTHENTICATED,),
    "ENABLE": AUTH, "SELECT": AUTH, "EXAMINE": AUTH, "CREATE": AUTH, "DELETE": AUTH, "RENAME": AUTH,
    "SUBSCRIBE": AUTH, "UNSUBSCRIBE": AUTH, "LIST": AUTH, "LSUB": AUTH, "NAMESPACE": AUTH,
    "STATUS": AUTH, "APPEND": AUTH, "IDLE": AUTH, "GETQUOTA": AUTH, "GETQUOTAROOT": AUTH,
    "COMPRESS": AUTH, "UNAUTHENTICATE": AUTH,
    "CHECK": SEL, "CLOSE": SEL, "UNSELECT": SEL, "EXPUNGE": SEL, "SEARCH": SEL, "FETCH": SEL,
    "STORE": SEL, "COPY": SEL, "MOVE": SEL, "SORT": SEL, "THREAD": SEL, "REPLACE": SEL,
    "CANCELUPDATE": SEL, "ESEARCH": AUTH, "GETMETADATA": AUTH, "SETMETADATA": AUTH, "NOTIFY": AUTH,
    "GENURLAUTH": AUTH, "RESETKEY": AUTH, "URLFETCH": AUTH,
}
# Non-UID versions: RFC 9051 7.5.1; SORT and THREAD (RFC 5256) answer with sequence
# numbers too, so the same reasoning applies.
NO_EXPUNGE_AFTER = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}


def _flags_text(flags):
    return "(" + " ".join(flags) + ")"


class Selected:
    """The selected mailbox as this session sees it."""

    def __init__(self, mailbox, uids, readonly):
        self.id = mailbox.id
        self.name = mailbox.name
        self.uidvalidity = mailbox.uidvalidity
        # uids[seq - 1]; a compact array: 4 bytes per message instead of a list of ints
        # (a session on a 100,000-message mailbox keeps 400 KB, not 3.6 MB).
        self.uids = array.array("I", uids)
        self.readonly = readonly
        self.keywords = set(mailbox.keywords)
        self.flags_checked = set()  # flag tuples whose keywords are all in keywords
        self.recent = set()  # UIDs \Recent in this session (IMAP4rev1, RFC 3501 2.3.2)
        self.searchres = []
        # The highest mod-sequence of the changes this session has been told of (RFC 7162
        # 3.1.2.1): what it may be given as HIGHESTMODSEQ when CONDSTORE is enabled later.
        self.modseq = mailbox.modseq
        # Every change up to here was committed before the mailbox was read at SELECT, so
        # whatever this session reads has it; its notice may still be on its way, and a
        # flag change among them is older than what a FETCH since may have sent.
        self.base_modseq = mailbox.modseq
        # uid -> (modseq, flags, told) of message states newer than ``modseq`` that
        # responses carried (told) or that a STORE .SILENT made: changes queued for the
        # UID with a lower mod-sequence are older than what the client knows and are not
        # sent (RFC 7162 3.1: a MODSEQ never goes down for a session).
        self.known = {}
        # RFC 5267 4: SEARCH/SORT contexts by command tag, and the UIDs whose membership
        # in them is to be checked again (arrived or flags changed).
        self.contexts = {}
        self.dirty = set()

    def seq_of(self, uid):
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None


class Session:
    def __init__(self, conn, factory):
        self.conn = conn
        self.factory = factory
        self.backend = factory.backend
        self.cid = format(next(_cid), "x")
        self.state = NOT_AUTHENTICATED
        self.tls = factory.kind == "imaps"
        self.account = None
        self._selected = None
        self.enabled = set()
        self.utf8 = False
        self.pending = []
        self._selecting = False
        self.idling = False
        self.bad = 0
        self._unsubscribe = None
        self._compressed = False
        self._contexts_running = False
        self._contexts_waiters = []
        self._progress = None  # (done, total) of the running command, for INPROGRESS
        self._progress_call = None
        # NOTIFY (RFC 5465, moxtw.imapserver.notify): the spec in force, and what waits
        # to be sent: STATUS per mailbox id, ready lines, new UIDs to FETCH.
        self.notify = None
        self._busy = False  # a command is running (IDLE included)
        self._notifying = None  # Deferred of notifications being written between commands
        self._note_status = {}
        self._note_lines = []
        self._note_fetch = []
        self._note_call = None
        self._inboxes = frozenset()
        self._subscribed = set()
        peer = conn.transport.getPeer()
        self.remote_ip = getattr(peer, "host", "")

    # -- properties

    @property
    def rev2(self):
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self):
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self):
        return "QRESYNC" in self.enabled

    @property
    def uidonly(self):
        return "UIDONLY" in self.enabled

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.conn.write(data)

    def untagged(self, text):
        self.write(f"* {text}\r\n")

    # -- greeting and capabilities

    def greeting(self):
        return f"* OK [CAPABILITY {' '.join(self.capabilities())}] {self.factory.hostname} moxtw IMAP ready\r\n".encode()

    def _login_allowed(self):
        return self.tls or not self.factory.require_tls_for_login

    def capabilities(self):
        caps = ["IMAP4rev2", "IMAP4rev1", "ENABLE", "LITERAL+", "SASL-IR", "ID"]
        if self.state == NOT_AUTHENTICATED:
            if not self.tls and self.factory.tls_context is not None:
                caps.append("STARTTLS")
            if not self._login_allowed():
                caps.append("LOGINDISABLED")
            caps += ["AUTH=" + m for m in self._mechanisms()]
            return caps
        caps += [
            "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "SPECIAL-USE",
            "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "SEARCHRES",
            "UNSELECT", "STATUS=SIZE", "QUOTA", "QUOTA=RES-STORAGE", "UTF8=ACCEPT", "BINARY",
            f"APPENDLIMIT={self.factory.append_limit}", "CHILDREN", "MULTIAPPEND", "PREVIEW",
            "SAVEDATE", "UNAUTHENTICATE", "REPLACE", "SORT", "SORT=DISPLAY", "ESORT", "PARTIAL", "CATENATE",
            "CONTEXT=SEARCH", "CONTEXT=SORT", "INPROGRESS", "MULTISEARCH", "METADATA", "LIST-METADATA", "UIDONLY",
            "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "WITHIN", "NOTIFY", "URLAUTH", "URLAUTH=BINARY",
        ]
        if not self._compressed:
            caps.append("COMPRESS=DEFLATE")
        return caps

    def _mechanisms(self):
        if not self._login_allowed():
            return []
        return server_mechanisms(True, self._channel_binding())

    def _channel_binding(self):
        if not self.tls:
            return None

        try:
            return channel_binding_for(self.conn.transport)
        except Exception:
            return None

    # -- dispatch

    def bad_command(self, data=b""):
        if self.selected is not None and b"SAVE" in data.upper() and b"SEARCH" in data[:40].upper():
            # RFC 5182 2.1: a SEARCH with SAVE that fails (here: BAD, or NO [BADCHARSET])
            # empties the saved result.
            self.selected.searchres = []
        self.bad += 1
        if self.bad >= MAX_BAD:
            self.write(b"* BYE too many bad commands\r\n")
            self.conn.close()

    @defer.inlineCallbacks
    def execute(self, cmd):
        if self._notifying is not None:
            yield self._notifying  # notifications being written go out whole first
        self._busy = True
        try:
            text = yield self._execute(cmd)
        finally:
            self._busy = False
        if self.notify is not None and self._notes_waiting():
            self._kick_notes()
        return text

    @defer.inlineCallbacks
    def _execute(self, cmd):
        states = COMMANDS.get(cmd.name)
        if states is None:
            raise BAD("unknown command")
        if self.state not in states:
            raise BAD(f"{cmd.name} not allowed in this state")
        handler = getattr(self, "cmd_" + cmd.name.lower())
        if self.uidonly and _uses_sequence_numbers(cmd):
            # RFC 9586 3.2: no message sequence numbers once UIDONLY is enabled.
            raise BAD("[UIDREQUIRED] message sequence numbers are not allowed with UIDONLY")
        if cmd.name not in NO_PROGRESS:
            self._progress = None
            self._progress_call = self.conn.callLater(INPROGRESS_FIRST, lambda: self._send_progress(cmd))
        try:
            text = yield handler(cmd)
        finally:
            call, self._progress_call = self._progress_call, None
            if call is not None and call.active():
                call.cancel()
        if self.state == LOGOUT:
            return
        if self.selected is not None:
            allow_expunge = cmd.uid or cmd.name not in NO_EXPUNGE_AFTER
            self.flush(allow_expunge)
            # Context updates of this command's changes come before its OK (RFC 5267 4.3).
            yield self._contexts_settled()
        if self.notify is not None:
            yield defer.Deferred.fromCoroutine(self._send_notes())
        if text is not None:
            self.write(f"{cmd.tag} OK {text}\r\n")

    # -- live updates

    def _changes(self, changes):
        if self.notify is not None:
            self._note_changes(changes)
        if self.selected is not None or self._selecting:
            # Only the selected mailbox gets untagged updates (without NOTIFY).
            self.pending.extend(changes)
        if self.notify is None:
            if self.idling:
                self.flush(True)
        elif self.idling or not self._busy:
            self._kick_notes()

    # -- NOTIFY (RFC 5465)

    _EVENT_OF = {ch.ChangeAddUID: "MessageNew", ch.ChangeRemoveUIDs: "MessageExpunge", ch.ChangeFlags: "FlagChange"}

    def _note_changes(self, changes):
        """Note what the NOTIFY spec wants of committed changes, to be sent when no
        command output can be interrupted."""
        sel = self.selected
        spec = self.notify
        ctx = {"inboxes": self._inboxes, "subscribed": self._subscribed}
        for c in changes:
            if isinstance(c, ch.ChangeSubscription):
                # Kept current for the "subscribed" filter, own changes too.
                (self._subscribed.add if c.subscribed else self._subscribed.discard)(c.name)
            if c.origin is self:
                continue  # not echoed to the session that made it
            event = self._EVENT_OF.get(type(c))
            if event is not None:
                if sel is None or c.mailbox_id != sel.id:
                    self._note_status.setdefault(c.mailbox_id, set()).add(event)
                continue
            name = lambda n: r.mailbox_name(n, self.utf8).decode()  # noqa: E731
            if isinstance(c, ch.ChangeMailboxAdd):
                if spec.wants(c.name, "MailboxName", **ctx):
                    self._note_lines.append(f'LIST () "/" {name(c.name)}')
            elif isinstance(c, ch.ChangeMailboxRemove):
                self._note_status.pop(c.mailbox_id, None)
                if spec.wants(c.name, "MailboxName", **ctx):
                    self._note_lines.append(f'LIST (\\NonExistent) "/" {name(c.name)}')  # RFC 5465 5.4
            elif isinstance(c, ch.ChangeMailboxRename):
                if spec.wants(c.new_name, "MailboxName", **ctx) or spec.wants(c.old_name, "MailboxName", **ctx):
                    # RFC 5465 5.4, RFC 5258 3.5: the new name with OLDNAME.
                    self._note_lines.append(f'LIST () "/" {name(c.new_name)} ("OLDNAME" ({name(c.old_name)}))')
            elif isinstance(c, ch.ChangeSubscription):
                if spec.wants(c.name, "SubscriptionChange", **ctx) or (
                        not c.subscribed and spec.wants(c.name, "SubscriptionChange", inboxes=self._inboxes,
                                                        subscribed={c.name})):
                    attrs = "\\Subscribed" if c.subscribed else ""
                    self._note_lines.append(f'LIST ({attrs}) "/" {name(c.name)}')  # RFC 5465 5.5
            elif isinstance(c, ch.ChangeMetadata):
                server = c.mailbox_id == 0
                event = "ServerMetadataChange" if server else "MailboxMetadataChange"
                if not c.entries:
                    continue
                if server:
                    # RFC 5465 5.7: server entries belong to no mailbox; any group with the event.
                    wanted = any(g.events and event in g.events for g in spec.groups)
                else:
                    wanted = spec.wants(c.name, event, **ctx)
                if wanted:
                    # RFC 5465 5.6/5.7, RFC 5464 4.4: the entry names, no values.
                    box = '""' if server else name(c.name)
                    entries = " ".join(r.astring(e, self.utf8).decode() for e in c.entries)
                    self._note_lines.append(f"METADATA {box} {entries}")

    def _notes_waiting(self):
        immediate = self.selected is not None and self.pending and (self.idling or self.notify.immediate)
        return bool(self._note_status or self._note_lines or self._note_fetch or immediate)

    def _kick_notes(self):
        """Send what waits as soon as the reactor is free, unless a command is running
        (it sends them before its tagged answer) or a send is under way (it loops)."""
        if self._note_call is not None or self._notifying is not None or self.state == LOGOUT:
            return
        self._note_call = self.conn.callLater(0, self._notes_now)

    def _notes_now(self):
        self._note_call = None
        if self.notify is None or self.state == LOGOUT or (self._busy and not self.idling):
            return
        if self._notifying is not None or not self._notes_waiting():
            return
        d = self._notifying = defer.Deferred.fromCoroutine(self._notify_loop())

        def done(result):
            self._notifying = None
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("sending NOTIFY notifications", f, cid=self.cid))

    async def _notify_loop(self):
        while self.notify is not None and self.state != LOGOUT and self._notes_waiting():
            if self.selected is not None and self.pending and (self.idling or self.notify.immediate):
                # RFC 5465 5.2/5.3: with "selected", EXISTS, FETCH and EXPUNGE at once.
                self.flush(True)
            await self._send_notes()

    async def _send_notes(self):
        """Write the STATUS, LIST and METADATA notifications and the FETCH of new
        messages that wait."""
        status, self._note_status = self._note_status, {}
        lines, self._note_lines = self._note_lines, []
        fetch, self._note_fetch = self._note_fetch, []
        if status:
            boxes = await self.account.mailboxes()
            sel = self.selected
            ctx = {"inboxes": self._inboxes, "subscribed": self._subscribed}
            for mb in boxes:
                events = status.get(mb.id)
                if not events or (sel is not None and mb.id == sel.id) or self.notify is None:
                    continue
                events &= self.notify.status_events(mb.name, **ctx)
                if events:
                    items = notifymod.status_items(events, condstore=self.condstore, initial=False)
                    self.untagged(self._status_line(mb, items))
        for line in lines:
            self.untagged(line)
        sel = self.selected
        if fetch and sel is not None and self.notify is not None and self.notify.new_fetch:
            fetch = [u for u in fetch if sel.seq_of(u) is not None]
            if fetch:
                await self._notify_fetch(sel, fetch)

    async def _notify_fetch(self, sel, uids):
        """RFC 5465 5.1: new messages with the FETCH attributes of the selected group;
        BODY and BINARY as their PEEK forms: a notification does not mark messages read."""
        atts = [dataclasses.replace(a, peek=True) if a.name in ("BODY[]", "BINARY[]") else a
                for a in self.notify.new_fetch]
        if self.uidonly or not any(a.name == "UID" for a in atts):
            atts = [FetchAtt("UID")] + atts
        cmd = Command(tag="*", name="FETCH", uid=True,
                      args={"seqset": SeqSet(tuple((u, u) for u in uids)), "atts": atts, "changedsince": None})
        try:
            await self.cmd_fetch(cmd)
        except IMAPError as e:
            self.untagged(f"NO notification FETCH failed: {e.text}")

    @defer.inlineCallbacks
    def cmd_notify(self, cmd):
        """NOTIFY NONE / SET [STATUS] event groups (RFC 5465 3). Authenticated."""
        groups = cmd.args["groups"]
        if groups is None:
            # RFC 5465 3: no more notifications; the selected mailbox is reported as
            # without NOTIFY (at the end of commands).
            self.notify = None
            self._note_status, self._note_lines, self._note_fetch = {}, [], []
            return "NOTIFY completed"
        named = []
        for filt, names, events in groups:
            named.append((filt, [self._name(n) for n in names] if names is not None else None, events))
        try:
            spec = notifymod.NotifySpec(named)
        except notifymod.NotifyError as e:
            raise BAD(str(e))
        self._subscribed = set((yield self.account.subscriptions()))
        inboxes = getattr(self.backend, "delivery_mailboxes", None)
        self._inboxes = frozenset(inboxes(self.account.name)) if inboxes is not None else frozenset()
        if self.pending and self.selected is not None:
            self.flush(True)  # what happened before, under the old rules
        self._note_status, self._note_lines, self._note_fetch = {}, [], []
        if cmd.args["status"]:
            # RFC 5465 3.1: the state of every mailbox the groups watch for message events.
            ctx = {"inboxes": self._inboxes, "subscribed": self._subscribed}
            sel = self.selected
            for mb in (yield self.account.mailboxes()):
                if sel is not None and mb.id == sel.id:
                    continue
                events = spec.status_events(mb.name, **ctx)
                if events:
                    self.untagged(self._status_line(mb, notifymod.status_items(events, condstore=self.condstore,
                                                                               initial=True)))
        self.notify = spec
        return "NOTIFY completed"

    def flush(self, allow_expunge=True):
        """Send queued changes of the selected mailbox as untagged responses."""
        sel = self.selected
        if sel is None:
            self.pending = []
            return
        keep = []
        added = False
        for c in self.pending:
            if getattr(c, "mailbox_id", None) != sel.id and not isinstance(c, ch.ChangeMailboxRemove):
                continue
            if getattr(c, "modseq", None) and not (isinstance(c, ch.ChangeRemoveUIDs) and not allow_expunge):
                sel.modseq = max(sel.modseq, c.modseq)
            if isinstance(c, ch.ChangeAddUID):
                if not sel.uids or c.uid > sel.uids[-1]:
                    sel.uids.append(c.uid)
                    added = True
                    if sel.contexts:
                        sel.dirty.add(c.uid)
                    # RFC 3501 2.3.2: recent in the first session told of it.
                    if not self.rev2 and self.account.recent.claim(sel.id, c.uid, take=not sel.readonly):
                        sel.recent.add(c.uid)
                    if self.notify is not None and self.notify.new_fetch and c.origin is not self:
                        self._note_fetch.append(c.uid)
                continue
            if added and not (isinstance(c, ch.ChangeRemoveUIDs) and not allow_expunge):
                # Announce new messages before an EXPUNGE or FETCH may name them: a client
                # must never see a sequence number above the EXISTS it knows (RFC 9051 7.4.1).
                self._exists(sel)
                added = False
            if isinstance(c, ch.ChangeRemoveUIDs):
                if not allow_expunge:
                    keep.append(c)
                    continue
                self._send_expunges(c.uids)
            elif isinstance(c, ch.ChangeFlags):
                if sel.contexts:
                    sel.dirty.add(c.uid)
                if c.origin is self:
                    continue  # STORE answered for itself
                seq = sel.seq_of(c.uid)
                if seq is None:
                    continue
                modseq, flags = c.modseq, c.flags
                if modseq <= sel.base_modseq:
                    continue
                known = sel.known.get(c.uid)
                if known is not None and known[0] >= modseq:
                    if known[2]:
                        continue  # the client has a newer state already
                    # Older than a silent STORE's state, which the client does not have
                    # whole: that state is what it gets.
                    modseq, flags = known[0], known[1]
                    sel.known[c.uid] = (modseq, flags, True)
                mod = f" MODSEQ ({modseq})" if self.condstore else ""
                self._untagged_fetch(seq, c.uid, f"FLAGS {self._fetch_flags(flags, c.uid)}{mod}")
            elif isinstance(c, ch.ChangeMailboxKeywords):
                new = set(c.keywords) - sel.keywords
                if new:
                    sel.keywords |= new
                    self.untagged(f"FLAGS {self._flags_list(sel)}")
            elif isinstance(c, ch.ChangeMailboxRemove) and c.mailbox_id == sel.id:
                self.write(b"* BYE selected mailbox was deleted\r\n")
                self.conn.close()
                self.pending = []
                return
        if added:
            self._exists(sel)
        self.pending = keep
        if sel.dirty:
            self._update_contexts()
        if sel.known:
            # Every change up to sel.modseq has been seen: states no newer are done with.
            sel.known = {u: k for u, k in sel.known.items() if k[0] > sel.modseq and sel.seq_of(u) is not None}

    def _note_known(self, sel, uid, modseq, flags, told=True):
        """A message state (flags at modseq) the client has been sent (or, ``told``
        False, made with STORE .SILENT)."""
        if modseq > sel.modseq:
            k = sel.known.get(uid)
            if k is None or k[0] < modseq:
                sel.known[uid] = (modseq, tuple(flags), told)

    def _recent_key(self, key, recent=None):
        """The search program with RECENT, NEW and OLD (RFC 3501 6.4.4) as UID sets of
        this session's recent messages (``recent``, default those of the selected
        mailbox): NEW is RECENT UNSEEN, OLD is NOT RECENT. The program is changed in
        place (it belongs to this command)."""
        ranges = tuple((u, u) for u in sorted(self.selected.recent if recent is None else recent))
        stack = [key]
        while stack:
            node = stack.pop()
            if node.op in ("and", "or", "not"):
                stack.extend(node.args)
                continue
            recent = SearchKey("uid", [SeqSet(ranges)])
            if node.op == "recent":
                node.op, node.args = "uid", recent.args
            elif node.op == "old":
                node.op, node.args = "not", [recent]
            elif node.op == "new":
                node.op, node.args = "and", [recent, SearchKey("unseen", [])]
        return key

    def _exists(self, sel):
        self.untagged(f"{len(sel.uids)} EXISTS")
        if not self.rev2:
            self.untagged(f"{self._recent_count(sel)} RECENT")  # RFC 3501 7.3.2

    def _recent_count(self, sel):
        return sum(1 for u in sel.recent if sel.seq_of(u) is not None)

    def _send_expunges(self, uids):
        sel = self.selected
        self._write_expunges(sel, uids)
        # The client has been told: what was held for this session can go.
        self.account.hold.release(self, sel.id, uids)

    def _write_expunges(self, sel, uids):
        present = [u for u in uids if sel.seq_of(u) is not None]
        sel.recent.difference_update(uids)
        if not present:
            return
        for c in sel.contexts.values():
            # RFC 5267 4.3: REMOVEFROM before the EXPUNGE, while its numbers still hold.
            self._write_context(sel, c, c.remove(present), [])
        if self.qresync or self.uidonly:
            # RFC 7162 3.2.10: VANISHED instead of EXPUNGE once QRESYNC is enabled; also
            # with UIDONLY (RFC 9586 3.5).
            for u in present:
                sel.uids.pop(sel.seq_of(u) - 1)
            self.untagged(f"VANISHED {r.format_seqset(sorted(present))}")
            return
        # Highest first, so earlier sequence numbers stay valid while we go.
        for u in sorted(present, reverse=True):
            seq = sel.seq_of(u)
            sel.uids.pop(seq - 1)
            self.untagged(f"{seq} EXPUNGE")

    # -- progress of long commands (RFC 9585)

    def _note_progress(self, done, total):
        self._progress = (done, total)

    def _send_progress(self, cmd):
        """* OK [INPROGRESS ("tag" done total)] (RFC 9585 4: NIL NIL when the amount of
        work is not known), and again later while the command runs."""
        if self.conn.output_stopped:
            return
        done, total = self._progress or (None, None)
        counts = "NIL NIL" if total is None else f"{done} {max(total, 1)}"
        self.untagged(f"OK [INPROGRESS ({r.string(cmd.tag, False).decode()} {counts})] still working")
        self._progress_call = self.conn.callLater(INPROGRESS_EVERY, lambda: self._send_progress(cmd))

    # -- search and sort contexts (RFC 5267 4)

    def _write_context(self, sel, c, removals, additions):
        """ESEARCH REMOVEFROM / ADDTO of context ``c`` (RFC 5267 4.3)."""
        number = (lambda u: u) if c.uid else sel.seq_of
        head = f"ESEARCH (TAG {r.string(c.tag, False).decode()}){' UID' if c.uid else ''}"
        for word, pairs in (("REMOVEFROM", removals), ("ADDTO", additions)):
            text = pairs and contextmod.pairs_text(pairs, number, c.sorted)
            if text:
                self.untagged(f"{head} {word} ({text})")

    def _new_context(self, cmd, sel, key, found, criteria=None, keys=None):
        """Keep the result of a SEARCH/SORT with RETURN (UPDATE) as a context, or say
        why not (RFC 5267 4.3.1: NOUPDATE, the results are given all the same)."""
        sel.contexts.pop(cmd.tag, None)  # a context of an earlier command with this tag
        if len(sel.contexts) >= contextmod.MAX_CONTEXTS:
            why = f"at most {contextmod.MAX_CONTEXTS} search contexts"
        elif criteria is not None and len(found) > contextmod.MAX_SORT_RESULT:
            why = f"sort results of more than {contextmod.MAX_SORT_RESULT} messages are not updated"
        else:
            if criteria is None:
                c = contextmod.SearchContext(cmd.tag, cmd.uid, key, found)
            else:
                c = contextmod.SortContext(cmd.tag, cmd.uid, key, criteria, found, keys)
            sel.contexts[cmd.tag] = c
            return
        self.untagged(f"NO [NOUPDATE {r.string(cmd.tag, False).decode()}] {why}")

    def _update_contexts(self):
        """Check the selected mailbox's dirty messages against its contexts, in the
        background, one pass at a time (a later change waits for the pass before it, so
        results are applied in order)."""
        if self._contexts_running:
            return
        self._contexts_running = True
        d = defer.Deferred.fromCoroutine(self._run_contexts())
        d.addErrback(lambda f: log.failure("updating search contexts", f))

    async def _run_contexts(self):
        try:
            while True:
                sel = self.selected
                if sel is None or not sel.dirty:
                    return
                batch, sel.dirty = sel.dirty, set()
                for c in list(sel.contexts.values()):
                    present = [u for u in batch if sel.seq_of(u) is not None]
                    if not present:
                        break
                    try:
                        matching, keys = await self._evaluate_context(sel, c, present)
                    except Exception:
                        log.failure("evaluating search context {tag}", tag=c.tag)
                        continue
                    if self.selected is not sel or sel.contexts.get(c.tag) is not c:
                        continue  # deselected or cancelled meanwhile
                    # Messages expunged meanwhile were taken out as they went.
                    present = [u for u in present if sel.seq_of(u) is not None]
                    removals, additions = c.update(present, matching & set(present), keys)
                    self._write_context(sel, c, removals, additions)
        finally:
            self._contexts_running = False
            waiters, self._contexts_waiters = self._contexts_waiters, []
            for w in waiters:
                w.callback(None)

    async def _evaluate_context(self, sel, c, uids):
        """(UIDs of ``uids`` that match context ``c``'s program now, their sort keys
        for a SORT context)."""
        key = SearchKey("and", [SearchKey("uid", [SeqSet(contextmod.uid_ranges(uids))]), c.key])
        if not c.sorted:
            found = await searchmod.search(self.account, sel.id, list(sel.uids), key, searchres=sel.searchres)
            return set(found), None
        found, keys = await searchmod.sort(
            self.account, sel.id, list(sel.uids), c.criteria, key, searchres=sel.searchres, with_keys=True
        )
        return set(found), keys

    def _contexts_settled(self):
        """Deferred that fires when no context update is under way."""
        if not self._contexts_running:
            return defer.succeed(None)
        d = defer.Deferred()
        self._contexts_waiters.append(d)
        return d

    def cmd_cancelupdate(self, cmd):
        """CANCELUPDATE "tag" ... (RFC 5267 4.3): stop updating these contexts. Selected."""
        sel = self.selected
        unknown = [t for t in cmd.args["tags"] if t not in sel.contexts]
        if unknown:
            return defer.fail(NO(f"no search context with tag {unknown[0]!r}"))
        for t in cmd.args["tags"]:
            del sel.contexts[t]
        return defer.succeed("CANCELUPDATE completed")

    def _untagged_fetch(self, seq, uid, items, with_uid=True):
        """An untagged FETCH of ``items`` (text): "* seq FETCH (UID uid items)", or with
        UIDONLY "* uid UIDFETCH (items)" (RFC 9586 3.3)."""
        if self.uidonly:
            self.untagged(f"{uid} UIDFETCH ({items})")
        else:
            self.untagged(f"{seq} FETCH ({f'UID {uid} ' if with_uid else ''}{items})")

    def _fetch_flags(self, flags, uid):
        """The FLAGS of a FETCH response, after an untagged FLAGS announcing any keyword
        in them this session was not told of yet (RFC 9051 7.3.5: FLAGS lists the
        flags in use; clients and imaptest check that FETCH uses only those); with
        \Recent for this session's recent messages (RFC 3501 2.3.2)."""
        self._announce_keywords(flags)
        if uid in self.selected.recent:
            flags = tuple(flags) + ("\\Recent",)
        return _flags_text(flags)

    def _announce_keywords(self, flags):
        sel = self.selected
        if sel is None or flags in sel.flags_checked:
            return
        new = {f for f in flags if not f.startswith("\\") and f not in sel.keywords}
        if new:
            sel.keywords |= new
            self.untagged(f"FLAGS {self._flags_list(sel)}")
        if len(sel.flags_checked) > 1000:
            sel.flags_checked.clear()  # combinations of flags seen: a few, normally
        sel.flags_checked.add(flags)

    def _flags_list(self, sel):
        return "(" + " ".join(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"] + sorted(sel.keywords)) + ")"

    @property
    def selected(self):
        return self._selected

    @selected.setter
    def selected(self, sel):
        if sel is None and self.account is not None:
            # No mailbox shown any more: expunged messages held for us can go.
            self.account.hold.leave(self)
        self._selected = sel

    def connection_lost(self):
        self.state = LOGOUT
        if self.account is not None:
            self.account.hold.leave(self)
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None

    # -- any state

    def cmd_capability(self, cmd):
        """CAPABILITY. Any state."""
        self.untagged("CAPABILITY " + " ".join(self.capabilities()))
        return defer.succeed("CAPABILITY completed")

    def cmd_noop(self, cmd):
        """NOOP. Any state; sends pending updates."""
        return defer.succeed("NOOP completed")

    def cmd_check(self, cmd):
        """CHECK (RFC 3501 only). Selected."""
        return defer.succeed("CHECK completed")

    def cmd_logout(self, cmd):
        """LOGOUT. Any state."""
        self.write(b"* BYE logging out\r\n")
        self.write(f"{cmd.tag} OK LOGOUT completed\r\n")
        self.state = LOGOUT
        self.conn.close()
        return defer.succeed(None)

    def cmd_id(self, cmd):
        """ID (RFC 2971). Any state."""
        params = cmd.args.get("params") or {}
        if params:
            log.info("client id {params}", params=params, cid=self.cid)
        self.untagged(f'ID ("name" "moxtw" "version" {r.string(__version__, False).decode()})')
        return defer.succeed("ID completed")

    # -- not authenticated

    def cmd_starttls(self, cmd):
        """STARTTLS (RFC 9051 6.2.1). Not authenticated."""
        if self.tls or self.factory.tls_context is None:
            raise BAD("STARTTLS not available")
        self.write(f"{cmd.tag} OK begin TLS negotiation now\r\n")
        self.conn.start_tls(self.factory.tls_context)
        self.tls = True
        return defer.succeed(None)

    @defer.inlineCallbacks
    def cmd_login(self, cmd):
        """LOGIN user password (RFC 9051 6.2.3). Not authenticated; refused without TLS
        (LOGINDISABLED) unless the listener allows it."""
        if not self._login_allowed():
            raise NO("[PRIVACYREQUIRED] LOGIN only after STARTTLS")
        refusal = self.backend.login_limits.allowed(self.remote_ip)
        if refusal:
            raise NO(f"[UNAVAILABLE] {refusal}")

        limited = self.backend.login_limits.sasl_backend(self.remote_ip)
        try:
            account = yield limited.authenticate(cmd.args["user"], cmd.args["password"])
        except LoginDisabled as e:
            raise NO(f"[AUTHENTICATIONFAILED] {e}")
        except AuthFailed:
            delay = self.backend.login_limits.record(self.remote_ip, limited.login, False)
            if delay:
                yield task.deferLater(self.factory.clock_or_reactor(), delay, lambda: None)
            raise NO("[AUTHENTICATIONFAILED] invalid credentials")
        self._logged_in(account)
        return f"[CAPABILITY {' '.join(self.capabilities())}] LOGIN completed"

    @defer.inlineCallbacks
    def cmd_authenticate(self, cmd):
        """AUTHENTICATE mechanism [initial-response] (RFC 9051 6.2.2, RFC 4959 SASL-IR).
        Not authenticated."""
        name = cmd.args["mechanism"]
        if name not in self._mechanisms():
            raise NO("[CANNOT] mechanism not available")
        refusal = self.backend.login_limits.allowed(self.remote_ip)
        if refusal:
            raise NO(f"[UNAVAILABLE] {refusal}")
        limited = self.backend.login_limits.sasl_backend(self.remote_ip)
        mech = sasl.new_server_mechanism(
            name, limited, channel_binding=self._channel_binding(),
            hostname=self.factory.hostname, tls=self._login_allowed(),
        )
        data = cmd.args.get("initial")
        try:
            while True:
                step = yield mech.step(data)
                if step.done:
                    break
                self.write(b"+ " + base64.b64encode(step.challenge or b"") + b"\r\n")
                line = yield self.conn.read_continuation()
                if line.strip() == b"*":
                    raise BAD("authentication cancelled")
                try:
                    data = base64.b64decode(line.strip(), validate=True)
                except ValueError:
                    raise BAD("invalid base64")
        except sasl.SASLError as e:
            if e.reason in ("auth-failed", "login-disabled"):
                delay = self.backend.login_limits.record(self.remote_ip, limited.login, False)
                if delay:
                    yield task.deferLater(self.factory.clock_or_reactor(), delay, lambda: None)
                raise NO(f"[AUTHENTICATIONFAILED] {e if e.reason == 'login-disabled' else 'authentication failed'}")
            if e.reason == "temporary":
                raise NO("[UNAVAILABLE] temporary failure")
            raise BAD(str(e))
        self._logged_in(step.account)
        return f"[CAPABILITY {' '.join(self.capabilities())}] AUTHENTICATE completed"

    def _logged_in(self, account):
        if self.state == LOGOUT:
            return  # the connection closed while the login was checked
        self.account = account
        self.state = AUTHENTICATED
        self._unsubscribe = account.bus.subscribe(self._changes)
        self.conn.authenticated()
        log.info("authenticated {account}", account=account.name, cid=self.cid)

    # -- authenticated

    def cmd_unauthenticate(self, cmd):
        """UNAUTHENTICATE (RFC 8437). Authenticated or selected."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self.selected = None
        self.account = None
        self.state = NOT_AUTHENTICATED
        self.enabled = set()
        self.utf8 = False
        self.pending = []
        self.conn.unauthenticated()
        return defer.succeed("UNAUTHENTICATE completed")

    def cmd_enable(self, cmd):
        """ENABLE capability... (RFC 5161). Authenticated."""
        known = {"CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT", "UIDONLY"}
        new = []
        for cap in cmd.args["capabilities"]:
            if cap in known and cap not in self.enabled:
                if cap in ("CONDSTORE", "QRESYNC"):
                    self._enable_condstore()
                self.enabled.add(cap)
                new.append(cap)
        if "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled:
            self.utf8 = True  # RFC 6855 3, RFC 9051: UTF-8 mailbox names and strings
        self.untagged("ENABLED" + "".join(" " + c for c in new))
        return defer.succeed("ENABLE completed")

    def _enable_condstore(self):
        """CONDSTORE enabled by a command that uses it (RFC 7162 3.1). With a mailbox
        selected, the client learns its HIGHESTMODSEQ now (RFC 7162 3.1.2.1: the server
        MUST send it in an untagged OK when CONDSTORE is enabled while selected)."""
        if self.condstore:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {self.selected.modseq}] modseq")

    def cmd_namespace(self, cmd):
        """NAMESPACE (RFC 2342). Authenticated."""
        self.untagged('NAMESPACE (("" "/")) NIL NIL')
        return defer.succeed("NAMESPACE completed")

    def cmd_select(self, cmd):
        """SELECT mailbox [(CONDSTORE | QRESYNC (...))]. Authenticated or selected."""
        return self._select(cmd, readonly=False)

    def cmd_examine(self, cmd):
        """EXAMINE mailbox: SELECT, read-only. Authenticated or selected."""
        return self._select(cmd, readonly=True)

    @defer.inlineCallbacks
    def _select(self, cmd, readonly):
        if self.selected is not None:
            self.selected = None
            self.state = AUTHENTICATED
            if self.rev2 or self.qresync:
                self.untagged("OK [CLOSED] previous mailbox closed")  # RFC 7162 3.2.11
        name = self._name(cmd.args["mailbox"])
        # Changes from before this point are in what we read below; later ones are
        # queued (self._selecting) and applied on top. Queueing starts before the
        # mailbox is looked up, so a DELETE by another session committed after the
        # lookup is among them.
        self.pending = []
        self._selecting = True
        try:
            mb = yield self.account.mailbox(name)
            if mb is None:
                raise NO("[NONEXISTENT] no such mailbox")
            # From here, messages removed from the mailbox stay readable for this
            # session until it has told its client (moxtw.store.hold); the UIDs read
            # below include every removal not yet seen.
            self.account.hold.view(self, mb.id)
            if cmd.args.get("condstore"):
                self.enabled.add("CONDSTORE")
            qr = cmd.args.get("qresync")
            if qr is not None and not self.qresync:
                raise BAD("QRESYNC not enabled")
            uids = yield self.account.uids(mb.id)
            unseen = None
            if not self.rev2 and mb.unseen:
                found = yield self.account.search(mb.id, SearchCriteria(flags_unset=("\\Seen",)))
                unseen = found[0] if found else None
            if any(isinstance(c, ch.ChangeMailboxRemove) and c.mailbox_id == mb.id for c in self.pending):
                # Deleted while we read it: the SELECT fails and nothing is selected
                # (RFC 9051 6.3.2), rather than a session on a mailbox that is gone.
                raise NO("[NONEXISTENT] mailbox was deleted")
        except BaseException:
            self.pending = []
            self.account.hold.leave(self)
            raise
        finally:
            self._selecting = False
        sel = Selected(mb, uids, readonly)
        self.untagged(f"FLAGS {self._flags_list(sel)}")
        self.untagged(f"{len(uids)} EXISTS")
        if not self.rev2:
            # RFC 3501 6.3.1/6.3.2: SELECT takes the recent messages for this session,
            # EXAMINE shows them and leaves them.
            tracker = self.account.recent
            sel.recent = tracker.peek(mb.id) if readonly else tracker.claim_all(mb.id)
            self.untagged(f"{self._recent_count(sel)} RECENT")
            if unseen is not None and sel.seq_of(unseen) is not None and not self.uidonly:
                # RFC 3501 6.3.1: first unseen message (not in IMAP4rev2, RFC 9051 6.3.2;
                # a sequence number, so not with UIDONLY, RFC 9586 3.2).
                self.untagged(f"OK [UNSEEN {sel.seq_of(unseen)}] first unseen")
        perm = "()" if readonly else self._flags_list(sel)[:-1] + " \\*)"
        self.untagged(f"OK [PERMANENTFLAGS {perm}] flags")
        self.untagged(f"OK [UIDVALIDITY {mb.uidvalidity}] uidvalidity")
        self.untagged(f"OK [UIDNEXT {mb.uidnext}] next uid")
        if self.condstore:
            self.untagged(f"OK [HIGHESTMODSEQ {mb.modseq}] modseq")
        if self.rev2:
            # RFC 9051 6.3.2: a LIST response with the mailbox name; IMAP4rev1 has none
            # (RFC 3501 6.3.1) and clients of it may not expect one.
            self.untagged(f"LIST () \"/\" {r.mailbox_name(mb.name, self.utf8).decode()}")
        self.selected = sel
        self.state = SELECTED
        if qr is not None and qr["uidvalidity"] == mb.uidvalidity:
            yield self._qresync(sel, qr)
        return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {cmd.name} completed"

    @defer.inlineCallbacks
    def _qresync(self, sel, qr):
        # RFC 7162 3.2.5.1: VANISHED (EARLIER) and FETCH for changes since the modseq.
        modseq = qr["modseq"]
        known = qr.get("known_uids")
        vanished = yield self.account.expunged_since(sel.id, modseq)
        if known is not None:
            allowed = set(self._uids_in(known, sorted(set(sel.uids) | set(vanished)), by_uid=True))
            vanished = [u for u in vanished if u in allowed]
        if vanished:
            self.untagged(f"VANISHED (EARLIER) {r.format_seqset(vanished)}")
        changed = yield self.account.messages(sel.id, changed_since=modseq)
        for m in changed:
            seq = sel.seq_of(m.uid)
            if seq is not None:
                self._note_known(sel, m.uid, m.modseq, m.flags)
                self._untagged_fetch(seq, m.uid, f"FLAGS {self._fetch_flags(m.flags, m.uid)} MODSEQ ({m.modseq})")

    def _name(self, name, new=False):
        """The stored form of a mailbox name; ``new``: for a mailbox to be created."""
        try:
            return (check_new_mailbox_name if new else normalize_mailbox_name)(name)
        except se.MailboxNameError as e:
            raise NO(f"[CANNOT] {e}")

    def _no_such_mailbox(self, name):
        """NO for a missing destination: RFC 9051 7.1 [TRYCREATE] only when a CREATE of
        the name could succeed, else (a "." or ".." component) [CANNOT] (RFC 5530 3)."""
        try:
            check_new_mailbox_name(name)
        except se.MailboxNameError as e:
            return NO(f"[CANNOT] no such mailbox, and {e}")
        return NO("[TRYCREATE] no such mailbox")

    @defer.inlineCallbacks
    def cmd_create(self, cmd):
        """CREATE mailbox [(USE (special-use))] (RFC 6154 CREATE-SPECIAL-USE). Authenticated."""
        name = cmd.args["mailbox"].rstrip("/")
        name = self._name(name, new=True)
        use = cmd.args.get("use") or []
        if len(use) > 1:
            raise NO("[USEATTR] only one special-use attribute per mailbox")
        try:
            yield self.account.create_mailbox(name, special_use=use[0] if use else None, origin=self)
        except se.MailboxExists:
            raise NO("[ALREADYEXISTS] mailbox exists")
        except ValueError as e:
            raise NO(f"[USEATTR] {e}")
        # Not subscribed (RFC 9051 6.3.4 and 6.3.7 are separate commands; imaptest checks).
        return "CREATE completed"

    @defer.inlineCallbacks
    def cmd_delete(self, cmd):
        """DELETE mailbox. Authenticated."""
        name = self._name(cmd.args["mailbox"])
        if self.selected is not None and self.selected.name == name:
            self.selected = None
            self.state = AUTHENTICATED
        try:
            yield self.account.delete_mailbox(name, origin=self)
        except se.MailboxNotFound:
            raise NO("[NONEXISTENT] no such mailbox")
        except se.MailboxHasChildren:
            raise NO("[HASCHILDREN] mailbox has children, delete them first")
        except se.MailboxNotAllowed as e:
            raise NO(f"[CANNOT] {e}")
        return "DELETE completed"

    @defer.inlineCallbacks
    def cmd_rename(self, cmd):
        """RENAME old new. Authenticated."""
        old, new = self._name(cmd.args["old"]), self._name(cmd.args["new"], new=True)
        try:
            yield self.account.rename_mailbox(old, new, origin=self)
        except se.MailboxNotFound:
            raise NO("[NONEXISTENT] no such mailbox")
        except se.MailboxExists:
            raise NO("[ALREADYEXISTS] destination exists")
        except se.MailboxNotAllowed as e:
            raise NO(f"[CANNOT] {e}")
        if self.selected is not None and self.selected.name == old and old != INBOX:
            self.selected.name = new
        return "RENAME completed"

    @defer.inlineCallbacks
    def cmd_subscribe(self, cmd):
        """SUBSCRIBE mailbox. Authenticated."""
        yield self.account.subscribe(self._name(cmd.args["mailbox"]), origin=self)
        return "SUBSCRIBE completed"

    @defer.inlineCallbacks
    def cmd_unsubscribe(self, cmd):
        """UNSUBSCRIBE mailbox. Authenticated."""
        yield self.account.unsubscribe(self._name(cmd.args["mailbox"]), origin=self)
        return "UNSUBSCRIBE completed"

    @defer.inlineCallbacks
    def cmd_list(self, cmd):
        """LIST reference pattern(s) [RETURN (...)] with LIST-EXTENDED (RFC 5258),
        LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154). Authenticated."""
        a = cmd.args
        select = set(a.get("select") or [])
        ret = a.get("return") or {}
        # Patterns that are not modified UTF-7 (None) match nothing.
        patterns = [p for p in a["patterns"] if p is not None]
        ref = a.get("reference", "")
        if patterns == [""]:
            # RFC 9051 6.3.9: the hierarchy delimiter and root.
            self.untagged('LIST (\\Noselect) "/" ""')
            return "LIST completed"
        mailboxes = yield self.account.mailboxes()
        subs = set((yield self.account.subscriptions()))
        by_name = {m.name: m for m in mailboxes}
        names = set(by_name)
        recursive = "RECURSIVEMATCH" in select
        if "SUBSCRIBED" in select:
            names = set(subs)
            if recursive:
                # RFC 5258 3.5: parents of subscribed mailboxes may match the pattern
                # and are then returned with CHILDINFO.
                names |= _ancestors(subs)
        if len(patterns) > MAX_LIST_PATTERNS:
            raise BAD(f"at most {MAX_LIST_PATTERNS} patterns")
        regexes = [_pattern_regex(ref + p) for p in dict.fromkeys(patterns)]
        names = sorted(names)
        slow = sum(1 for rx in regexes if not rx.fast)
        if slow and slow * sum(map(len, names)) > MAX_LIST_WORK:
            # Patterns mixing * and % are matched in Python, one step per character.
            raise NO(f"[LIMIT] too much matching for {slow} patterns mixing * and %: use fewer")
        if all(rx.fast for rx in regexes) and len(names) * len(regexes) <= INLINE_LIST_WORK:
            matched = _matching(names, regexes)
        else:
            # Many mailboxes or patterns: matched off the reactor thread.
            matched = yield threads.deferToThread(_matching, names, regexes)
        parents = _ancestors(by_name)  # names with children
        want_status = ret.get("STATUS")
        childinfo = set()
        if recursive and "SUBSCRIBED" in select:
            # RFC 5258 3.5 (and its examples): CHILDINFO ("SUBSCRIBED") for a matched
            # mailbox with a subscribed descendant that the patterns do not match.
            childinfo = _parents_of_unmatched(subs, matched)
        for name in matched:
            mb = by_name.get(name)
            if "SPECIAL-USE" in select and (mb is None or not mb.special_use):
                continue
            extended = ""
            if "SUBSCRIBED" in select and name not in subs:
                if name not in childinfo:
                    continue  # only there as a parent, with nothing unmatched below it
                extended = ' ("CHILDINFO" ("SUBSCRIBED"))'
            attrs = []
            if mb is None:
                attrs.append("\\NonExistent")
            else:
                attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
                if mb.special_use and ("SPECIAL-USE" in ret or "SPECIAL-USE" in select or not ret):
                    attrs.append(mb.special_use)
            if name in subs and ("SUBSCRIBED" in ret or "SUBSCRIBED" in select):
                attrs.append("\\Subscribed")
            self.untagged(
                f"LIST ({' '.join(attrs)}) \"/\" {r.mailbox_name(name, self.utf8).decode()}{extended}"
            )
            if want_status and mb is not None:
                self.untagged(self._status_line(mb, want_status))
            if "METADATA" in ret and mb is not None:
                # RFC 9590 3: the mailbox's METADATA after its LIST response.
                try:
                    found = yield self.account.get_metadata(name, ret["METADATA"])
                except se.MailboxNotFound:
                    continue  # deleted meanwhile
                self._write_metadata(name, ret["METADATA"], found, 0, None)
        return "LIST completed"

    @defer.inlineCallbacks
    def cmd_lsub(self, cmd):
        """LSUB reference pattern (RFC 3501; deprecated in IMAP4rev2). Authenticated."""
        subs = set((yield self.account.subscriptions()))
        if cmd.args["pattern"] is None:
            return "LSUB completed"  # not modified UTF-7: matches nothing
        rx = _pattern_regex(cmd.args.get("reference", "") + cmd.args["pattern"])
        names = sorted(subs | _ancestors(subs))
        if not rx.fast and sum(map(len, names)) > MAX_LIST_WORK:
            raise NO("[LIMIT] too much matching for a pattern mixing * and %")
        if rx.fast and len(names) <= INLINE_LIST_WORK:
            matched = _matching(names, [rx])
        else:
            matched = yield threads.deferToThread(_matching, names, [rx])
        # RFC 3501 6.3.9: with "%", an unsubscribed parent of a subscribed mailbox the
        # pattern does not reach is returned, flagged \Noselect.
        parents = _parents_of_unmatched(subs, matched)
        for name in matched:
            if name in subs:
                attrs = ""
            elif name in parents:
                attrs = "\\Noselect"
            else:
                continue
            self.untagged(f'LSUB ({attrs}) "/" {r.mailbox_name(name, self.utf8).decode()}')
        return "LSUB completed"

    def _status_line(self, mb, items):
        values = []
        for item in items:
            if item == "MESSAGES":
                values.append(f"MESSAGES {mb.total}")
            elif item == "UIDNEXT":
                values.append(f"UIDNEXT {mb.uidnext}")
            elif item == "UIDVALIDITY":
                values.append(f"UIDVALIDITY {mb.uidvalidity}")
            elif item == "UNSEEN":
                values.append(f"UNSEEN {mb.unseen}")
            elif item == "DELETED":
                values.append(f"DELETED {mb.deleted}")
            elif item == "SIZE":
                values.append(f"SIZE {mb.size}")
            elif item == "RECENT":
                # RFC 3501 6.3.10: messages no session has taken as recent yet.
                values.append(f"RECENT {self.account.recent.count(mb.id)}")
            elif item == "HIGHESTMODSEQ":
                values.append(f"HIGHESTMODSEQ {mb.modseq}")
            elif item == "APPENDLIMIT":
                values.append(f"APPENDLIMIT {self.factory.append_limit}")
        return f"STATUS {r.mailbox_name(mb.name, self.utf8).decode()} ({' '.join(values)})"

    @defer.inlineCallbacks
    def cmd_status(self, cmd):
        """STATUS mailbox (items). Authenticated."""
        if "HIGHESTMODSEQ" in cmd.args["items"]:
            self._enable_condstore()  # RFC 7162 3.1: a CONDSTORE-enabling command
        mb = yield self.account.mailbox(self._name(cmd.args["mailbox"]))
        if mb is None:
            raise NO("[NONEXISTENT] no such mailbox")
        self.untagged(self._status_line(mb, cmd.args["items"]))
        return "STATUS completed"

    @defer.inlineCallbacks
    def cmd_append(self, cmd):
        """APPEND mailbox [flags] [date] literal... (RFC 3502 MULTIAPPEND, RFC 4315
        APPENDUID). Authenticated."""
        name = self._name(cmd.args["mailbox"])
        if not self.utf8 and any(m.get("utf8") for m in cmd.args["messages"]):
            # RFC 6855 4: the UTF8 data item is only valid once UTF8=ACCEPT is enabled.
            raise BAD("APPEND UTF8 needs ENABLE UTF8=ACCEPT")
        if any("catenate" in m for m in cmd.args["messages"]):
            # RFC 4469 5: a missing destination is TRYCREATE, whatever the URLs say.
            if (yield self.account.mailbox(name)) is None:
                raise self._no_such_mailbox(name)
        items = []
        for m in cmd.args["messages"]:
            if "catenate" in m:
                m = dict(m, data=(yield self._catenate(m["catenate"])))
            data = yield self._storable(m)
            items.append((data, m["flags"], m["date"]))
        try:
            msgs = yield self.account.append_many(name, items, origin=self)
        except se.MailboxNotFound:
            raise self._no_such_mailbox(name)
        except se.QuotaExceeded as e:
            raise NO(f"[OVERQUOTA] {e}")
        except se.FlagError as e:
            raise BAD(str(e))
        # UIDVALIDITY from the append's transaction, not a lookup that may find the
        # mailbox deleted (or created anew) by another session since (RFC 4315 3).
        uids = r.format_seqset([m.uid for m in msgs])
        return f"[APPENDUID {msgs.uidvalidity} {uids}] APPEND completed"

    @defer.inlineCallbacks
    def _catenate(self, parts):
        """The message of APPEND CATENATE (RFC 4469): its TEXT literals and the message
        parts its URLs name (RFC 5092, inside this account), joined. A URL that names
        nothing gives NO [BADURL url] (RFC 4469 6), a result over APPENDLIMIT NO [TOOBIG]."""
        chunks, total = [], 0
        for kind, value in parts:
            if kind == "text":
                data = value
                if not isinstance(data, (bytes, bytearray)):
                    data = yield threads.deferToThread(_read_spool, data)
            else:
                data = yield self._url_data(value)
            total += len(data)
            if total > self.factory.append_limit:
                raise NO(f"[TOOBIG] catenated message over {self.factory.append_limit} bytes")
            chunks.append(bytes(data))
        return b"".join(chunks)

    @defer.inlineCallbacks
    def _url_data(self, url):
        # RFC 4469 6: "BADURL" SP url-resp-text, the URL without "]" and controls.
        bad = "".join(ch for ch in url if 0x20 < ord(ch) < 0x7F and ch != "]")[:500]
        try:
            u = imapurl.parse_url(url, self.factory.hostname, host_ok=lambda host: True)
        except imapurl.URLError as e:
            raise NO(f"[BADURL {bad}] {e}")
        account = self.account
        if u.urlauth is not None:
            # RFC 4469 5: a URLAUTH URL is checked as URLFETCH checks it, and may name
            # another account's message.
            found = yield self._urlauth_message(u)
            if found is None:
                raise NO(f"[BADURL {bad}] URLAUTH URL not valid for this user")
            account, msg = found
        else:
            owner = self._url_owner(u) if u.user else None
            if owner is not None and owner != account.name:
                raise NO(f"[BADURL {bad}] URL names another user's mailbox (only a URLAUTH URL may)")
            if owner is None and u.host is not None and u.host != self.factory.hostname.lower():
                raise NO(f"[BADURL {bad}] URL names another server")
            mb = yield account.mailbox(normalize_mailbox_name(u.mailbox))
            if mb is None or (u.uidvalidity is not None and u.uidvalidity != mb.uidvalidity):
                raise NO(f"[BADURL {bad}] no such mailbox, or UIDVALIDITY differs")
            msgs = yield account.messages(mb.id, uids=[u.uid])
            if not msgs:
                raise NO(f"[BADURL {bad}] no message with that UID")
            msg = msgs[0]
        try:
            data = yield threads.deferToThread(
                fetchmod.section_data, msg, lambda: account.open_message(msg.id), u.section, u.partial
            )
        except FileNotFoundError:
            raise NO(f"[BADURL {bad}] message was expunged")
        if data is None:
            raise NO(f"[BADURL {bad}] no such section")
        return data

    # -- URLAUTH (RFC 4467) and URLFETCH for binary parts (RFC 5524)

    def _parse_urlauth(self, text):
        """A URLAUTH URL's MessageURL, or None when it is not one. Any host is accepted
        here: the owner's address (user@host) must then be an account of ours."""
        try:
            u = imapurl.parse_url(text, self.factory.hostname, host_ok=lambda host: True)
        except imapurl.URLError:
            return None
        return u if u.urlauth is not None else None

    def _url_owner(self, u):
        login = urlauth.owner_login(u, self.factory.hostname)
        return self.backend.authenticator.account_for_login(login) if login else None

    @defer.inlineCallbacks
    def cmd_genurlauth(self, cmd):
        """GENURLAUTH 1*(url-rump mechanism) (RFC 4467 7): the URLs with an
        authorization token appended. Only for the user's own mailboxes."""
        out = []
        for text, mech in cmd.args["urls"]:
            bad = "".join(ch for ch in text if 0x20 < ord(ch) < 0x7F and ch != "]")[:500]
            if mech not in urlauth.MECHANISMS:
                raise NO(f"unknown URLAUTH mechanism {mech}; supported: INTERNAL")
            u = self._parse_urlauth(text)
            if u is None or u.urlauth.mechanism is not None:
                raise NO(f"[BADURL {bad}] not a URLAUTH rump URL (RFC 4467 2)")
            try:
                urlauth.parse_access(u.urlauth.access)
            except urlauth.AccessError as e:
                raise NO(f"[BADURL {bad}] {e}")
            if self._url_owner(u) != self.account.name:
                # RFC 4467 7: only the owner of the mailbox can authorize its URLs.
                raise NO(f"[BADURL {bad}] URL names a mailbox of another user")
            if urlauth.expired(u.urlauth):
                raise NO(f"[BADURL {bad}] ;EXPIRE= is in the past")
            try:
                key, uidvalidity, _ = yield self.account.urlauth_key(normalize_mailbox_name(u.mailbox), create=True)
            except (se.MailboxNotFound, se.MailboxNameError):
                raise NO(f"[BADURL {bad}] no such mailbox")
            if u.uidvalidity is not None and u.uidvalidity != uidvalidity:
                raise NO(f"[BADURL {bad}] UIDVALIDITY differs")
            out.append(f"{u.urlauth.rump}:internal:{urlauth.token(key, u.urlauth.rump)}")
        self.write(b"* GENURLAUTH " + b" ".join(r.astring(url) for url in out) + b"\r\n")
        return "GENURLAUTH completed"

    @defer.inlineCallbacks
    def cmd_resetkey(self, cmd):
        """RESETKEY [mailbox [mechanism...]] (RFC 4467 7): void every URL issued for the
        mailbox, or for all mailboxes."""
        for mech in cmd.args["mechanisms"]:
            if mech not in urlauth.MECHANISMS:
                raise NO(f"unknown URLAUTH mechanism {mech}; supported: INTERNAL")
        name = cmd.args["mailbox"]
        try:
            yield self.account.reset_urlauth_keys(None if name is None else self._name(name))
        except se.MailboxNotFound:
            raise NO("[NONEXISTENT] no such mailbox")
        return "RESETKEY completed"

    @defer.inlineCallbacks
    def cmd_urlfetch(self, cmd):
        """URLFETCH 1*url (RFC 4467 7, RFC 5524): the data of each URL this session may
        fetch, NIL for any other. Never sets \\Seen. One response, written a URL at a
        time at the client's pace: one message's data in memory at most."""
        self.write(b"* URLFETCH")
        for text, params in cmd.args["urls"]:
            if params == []:
                params = ["BODY"]  # "(url)": the data, as Dovecot answers it
            value = yield self._urlfetch(text, params)
            self.write(b" " + r.astring(text) + b" " + (value if value is not None else b"NIL"))
            value = None
            yield self.conn.wait_output()
            if self.conn.output_stopped:
                break
        self.write(b"\r\n")
        return "URLFETCH completed"

    @defer.inlineCallbacks
    def _urlauth_message(self, u):
        """(account, Message) a URLAUTH URL gives this session, or None (RFC 4467 7: a
        valid mechanism and token, not expired, access allowed, message present)."""
        ua = u.urlauth
        if ua.mechanism not in urlauth.MECHANISMS or urlauth.expired(ua):
            return None
        owner = self._url_owner(u)
        key = uidvalidity = mailbox_id = None
        account = self.account
        if owner is not None and urlauth.allows(ua.access, self.account.name,
                                                self.backend.authenticator.account_for_login):
            if owner != account.name:
                account = yield self.backend.authenticator.store.open_account(owner)
            try:
                key, uidvalidity, mailbox_id = yield account.urlauth_key(normalize_mailbox_name(u.mailbox))
            except (se.MailboxNotFound, se.MailboxNameError):
                key = None
        # The token is checked (against a random key when there is none) in every case,
        # so the time taken does not tell which owners and mailboxes exist.
        if not urlauth.token_ok(key, ua.rump, ua.token):
            return None
        if u.uidvalidity is not None and u.uidvalidity != uidvalidity:
            return None
        msgs = yield account.messages(mailbox_id, uids=[u.uid])
        return (account, msgs[0]) if msgs else None

    @defer.inlineCallbacks
    def _urlfetch(self, text, params):
        u = self._parse_urlauth(text)
        found = (yield self._urlauth_message(u)) if u is not None else None
        if found is None:
            return None
        account, msg = found
        try:
            value = yield threads.deferToThread(
                fetchmod.urlfetch_value, msg, lambda: account.open_message(msg.id), u.section, u.partial, params,
                self.utf8,
            )
        except FileNotFoundError:
            return None  # expunged meanwhile
        return value

    def _storable(self, message):
        """Deferred: an APPEND/REPLACE message's data as it is stored. Sent as a literal8
        (RFC 3516 4.4), its binary parts become base64, so that BINARY[] gives them back
        byte-exact and BODY[] never has to carry NUL (RFC 9051 4.3)."""
        if not message["binary"]:
            return defer.succeed(message["data"])
        return self.account.binary_as_text(message["data"])

    @defer.inlineCallbacks
    def cmd_idle(self, cmd):
        """IDLE (RFC 2177). Authenticated or selected: changes are sent at once until
        DONE."""
        self.write(b"+ idling\r\n")
        self.idling = True
        self.flush(True)
        try:
            done = yield self.conn.start_idle(cmd.tag)
        finally:
            self.idling = False
        if self._notifying is not None:
            yield self._notifying  # NOTIFY responses being written end before the OK
        if not done:
            raise BAD("expected DONE")
        return "IDLE terminated"

    @defer.inlineCallbacks
    def cmd_getquotaroot(self, cmd):
        """GETQUOTAROOT mailbox (RFC 9208). Authenticated."""
        name = self._name(cmd.args["mailbox"])
        mb = yield self.account.mailbox(name)
        if mb is None:
            raise NO("[NONEXISTENT] no such mailbox")  # RFC 9208 4.3.2
        self.untagged(f'QUOTAROOT {r.mailbox_name(mb.name, self.utf8).decode()} ""')
        yield self._quota_line()
        return "GETQUOTAROOT completed"

    @defer.inlineCallbacks
    def cmd_getquota(self, cmd):
        """GETQUOTA root (RFC 9208). Authenticated; the one root is ""."""
        if cmd.args["root"] != "":
            raise NO("[NONEXISTENT] no such quota root")
        yield self._quota_line()
        return "GETQUOTA completed"

    @defer.inlineCallbacks
    def _quota_line(self):
        used = yield self.account.quota_used()
        if self.account.quota:
            # RFC 9208 5.1: STORAGE in units of 1024 octets.
            self.untagged(f'QUOTA "" (STORAGE {(used + 1023) // 1024} {self.account.quota // 1024})')

    def cmd_compress(self, cmd):
        """COMPRESS DEFLATE (RFC 4978). Authenticated."""
        if cmd.args["mechanism"] != "DEFLATE":
            raise BAD("only DEFLATE")
        if self._compressed:
            raise NO("[COMPRESSIONACTIVE] already compressing")
        self.write(f"{cmd.tag} OK DEFLATE active\r\n")
        self._compressed = True
        self.conn.start_compression()
        return defer.succeed(None)

    # -- selected

    def _require_writable(self):
        if self.selected.readonly:
            raise NO("[READ-ONLY] mailbox selected with EXAMINE")

    def cmd_close(self, cmd):
        """CLOSE: expunge silently (if read-write) and deselect. Selected."""
        sel = self.selected
        self.selected = None
        self.state = AUTHENTICATED
        if sel.readonly:
            return defer.succeed("CLOSE completed")
        d = self.account.expunge(sel.id, origin=self)
        return d.addCallback(lambda _: "CLOSE completed")

    def cmd_unselect(self, cmd):
        """UNSELECT (RFC 3691). Selected."""
        self.selected = None
        self.state = AUTHENTICATED
        return defer.succeed("UNSELECT completed")

    @defer.inlineCallbacks
    def cmd_expunge(self, cmd):
        """EXPUNGE, UID EXPUNGE seqset (RFC 4315). Selected, read-write."""
        self._require_writable()
        sel = self.selected
        uids = None
        if cmd.uid:
            uids = self._uids_in(cmd.args["seqset"], sel.uids, by_uid=True)
        yield self.account.expunge(sel.id, uids=uids, origin=self)
        return "EXPUNGE completed"

    def _uids_in(self, seqset, uids, by_uid):
        """UIDs selected by a sequence set (seq numbers, or UIDs when by_uid)."""
        if seqset.searchres:
            chosen = set(self.selected.searchres)
            return [u for u in uids if u in chosen]
        out = set()
        if by_uid:
            if not uids:
                return []
            top = uids[-1]
            if len(seqset.ranges) == 1:
                lo, hi = seqset.ranges[0]
                lo = top if lo is STAR else lo
                hi = top if hi is STAR else hi
                lo, hi = min(lo, hi), max(lo, hi)
                # uids is ascending: one slice, no set (the common "1:*" case).
                return list(uids[bisect.bisect_left(uids, lo):bisect.bisect_right(uids, hi)])
            for lo, hi in seqset.ranges:
                lo = top if lo is STAR else lo
                hi = top if hi is STAR else hi
                lo, hi = min(lo, hi), max(lo, hi)
                out.update(uids[bisect.bisect_left(uids, lo):bisect.bisect_right(uids, hi)])
            return sorted(out)
        n = len(uids)
        for lo, hi in seqset.ranges:
            if n == 0:
                # RFC 9051 9 (seq-number): BAD for numbers above the message count,
                # including "*" in an empty mailbox.
                raise BAD("mailbox is empty, no message sequence numbers are valid")
            lo = n if lo is STAR else lo
            hi = n if hi is STAR else hi
            if lo > hi:
                lo, hi = hi, lo
            if hi > n:
                raise BAD("message sequence number out of range")
            out.update(uids[lo - 1:hi])
        return sorted(out)

    @defer.inlineCallbacks
    def cmd_fetch(self, cmd):
        """FETCH / UID FETCH seqset items [(CHANGEDSINCE n [VANISHED])] (RFC 9051 6.4.5,
        RFC 7162). Selected."""
        sel = self.selected
        a = cmd.args
        uids = self._uids_in(a["seqset"], sel.uids, by_uid=cmd.uid)
        changedsince = a.get("changedsince")
        if changedsince is not None or any(att.name == "MODSEQ" for att in a["atts"]):
            self._enable_condstore()  # RFC 7162 3.1: CONDSTORE-enabling commands
        if a.get("vanished"):
            if not (cmd.uid and self.qresync and changedsince is not None):
                raise BAD("VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC enabled")
            gone = yield self.account.expunged_since(sel.id, changedsince)
            lo_hi = self._seqset_uid_bounds(a["seqset"], sel.uids)
            gone = [u for u in gone if lo_hi[0] <= u <= lo_hi[1]]
            if gone:
                self.untagged(f"VANISHED (EARLIER) {r.format_seqset(gone)}")
        ctx = fetchmod.FetchContext(
            utf8=self.utf8, rev2=self.rev2, condstore=self.condstore, readonly=sel.readonly,
            stream_threshold=STREAM_THRESHOLD, recent=frozenset(sel.recent), uidonly=self.uidonly,
        )
        atts = a["atts"]
        # Messages another session removed that this one has not been told of yet: they
        # are answered from the rows and files held for it (RFC 9051 7.5.1).
        held = self.account.hold.rows(self, sel.id, uids)
        if changedsince is not None:
            held = [row for row in held if row["modseq"] > changedsince]
        if uids and all(att.name in fetchmod.ROW_ITEMS for att in atts):
            yield self._fetch_rows(fetchmod, sel, uids, atts, ctx, cmd.uid, changedsince)
            if held:
                yield self._fetch_held(fetchmod, sel, held, atts, ctx, cmd.uid)
            return f"{'UID ' if cmd.uid else ''}FETCH completed"
        light = all(att.name in LIGHT_ITEMS for att in atts)
        step = FETCH_BATCH * 10 if light else FETCH_BATCH
        gone = []  # (uid, FileNotFoundError): the message file was gone when read
        for i in range(0, len(uids), step):
            self._progress = (i, len(uids))
            batch = uids[i:i + step]
            # One range query instead of long IN lists; UIDs not asked for are skipped.
            msgs = yield self.account.messages(
                sel.id, uids=[(batch[0], batch[-1])], changed_since=changedsince, light=light
            )
            wanted = set(batch)
            jobs = []
            for m in msgs:
                if m.uid not in wanted:
                    continue
                seq = sel.seq_of(m.uid)
                if seq is not None:
                    jobs.append((m, seq))
            results = yield threads.deferToThread(self._render_batch, fetchmod, jobs, atts, ctx, cmd.uid)
            seen_uids = []
            for (m, seq), res in zip(jobs, results):
                if isinstance(res, FileNotFoundError):
                    gone.append((m.uid, res))
                    continue
                if res.error:
                    raise NO(f"[{res.error}] cannot fetch message {seq}")
                if res.parts is not None:
                    try:
                        yield self._write_parts(m, res.parts)
                    except FileNotFoundError as e:
                        gone.append((m.uid, e))
                        continue
                else:
                    self._announce_keywords(m.flags)
                    self.write(res.data)
                self._note_known(sel, m.uid, m.modseq, m.flags)
                if res.sets_seen:
                    seen_uids.append(m.uid)
            if seen_uids:
                # RFC 9051 6.4.5: fetching the body sets \Seen. The rendered responses
                # already carry FLAGS with \Seen; with CONDSTORE the new MODSEQ follows.
                changed, _ = yield self.account.store_flags(sel.id, seen_uids, "add", ["\\Seen"], origin=self)
                for uid, modseq, flags in changed:
                    self._note_known(sel, uid, modseq, flags)
                if self.condstore:
                    for uid, modseq, flags in changed:
                        self._untagged_fetch(sel.seq_of(uid), uid, f"FLAGS {self._fetch_flags(flags, uid)} MODSEQ ({modseq})")
        if held:
            yield self._fetch_held(fetchmod, sel, held, atts, ctx, cmd.uid)
        if gone:
            yield self._expunged_meanwhile(sel, gone)
        return f"{'UID ' if cmd.uid else ''}FETCH completed"

    @defer.inlineCallbacks
    def _fetch_held(self, fetchmod, sel, rows, atts, ctx, include_uid):
        """FETCH of messages held for this session after their removal: as they were
        (flags included), from the held rows and files. Nothing is marked \Seen: the
        messages are gone."""
        ctx = dataclasses.replace(ctx, readonly=True)
        jobs = []
        for row in rows:
            seq = sel.seq_of(row["uid"])
            if seq is not None:
                jobs.append((Message.from_row(row), seq))
        results = yield threads.deferToThread(self._render_batch, fetchmod, jobs, atts, ctx, include_uid)
        for (m, seq), res in zip(jobs, results):
            if isinstance(res, FileNotFoundError):
                continue  # a crash cleanup or a CLI removed it: nothing to send
            if res.error:
                raise NO(f"[{res.error}] cannot fetch message {seq}")
            if res.parts is not None:
                try:
                    yield self._write_parts(m, res.parts)
                except FileNotFoundError:
                    continue
            else:
                self._announce_keywords(m.flags)
                self.write(res.data)
            self._note_known(sel, m.uid, m.modseq, m.flags)

    @defer.inlineCallbacks
    def _expunged_meanwhile(self, sel, gone):
        """For FETCH of messages whose file was gone: NO [EXPUNGEISSUED] when their index
        rows are gone too, i.e. another session expunged them (or deleted the mailbox)
        after we read the rows (RFC 9051 7.1, RFC 2180 4.1.3: the others were answered).
        A row whose file is missing is damage, not a race: that stays an error."""
        left = yield self.account.messages(sel.id, uids=[uid for uid, _ in gone], light=True)
        if left:
            raise dict(gone)[left[0].uid]
        raise NO("[EXPUNGEISSUED] some messages were expunged by another session meanwhile")

    @defer.inlineCallbacks
    def _fetch_rows(self, fetchmod, sel, uids, atts, ctx, include_uid, changedsince):
        """FETCH of items the index rows answer (flags, dates, sizes, ENVELOPE, ...), the
        listings clients ask for whole mailboxes: rows straight from the index (no Message
        objects, the ENVELOPE rendered at delivery) in slices of ROW_SLICE messages, each
        rendered off the reactor thread and written when the client has taken the one
        before (the transport's flow control), so neither the reactor nor memory is held
        by a large mailbox. The next slice is read while one is rendered."""
        renderer = fetchmod.RowRenderer(atts, ctx, include_uid)

        def read(batch):
            return self.account.fetch_rows(sel.id, batch[0], batch[-1], renderer.fields)

        def seqs_of(batch):
            """{uid: sequence number} of a batch, made on the reactor thread (the view is
            not changed under it) from the view's slice in one go."""
            lo = bisect.bisect_left(sel.uids, batch[0])
            hi = bisect.bisect_right(sel.uids, batch[-1])
            seqs = dict(zip(sel.uids[lo:hi], range(lo + 1, hi + 1)))
            if len(seqs) != len(batch):  # not every message in the range was asked for
                wanted = set(batch)
                seqs = {uid: seq for uid, seq in seqs.items() if uid in wanted}
            return seqs

        def render(rows, seqs):
            jobs = [
                (row, seqs[row.uid]) for row in rows
                if row.uid in seqs and (changedsince is None or row.modseq > changedsince)
            ]
            return renderer.render_all(jobs)

        batches = [uids[i:i + ROW_SLICE] for i in range(0, len(uids), ROW_SLICE)]
        gate = self.conn.flow_gate()
        pending = read(batches[0])
        try:
            for k, batch in enumerate(batches):
                if gate.stopped:
                    break  # the client went away: no point reading the rest
                rows = yield pending
                self._progress = (k * ROW_SLICE, len(uids))
                pending = read(batches[k + 1]) if k + 1 < len(batches) else None
                seqs = seqs_of(batch)
                data = yield threads.deferToThread(render, rows, seqs)
                if data:
                    yield gate.wait()
                    if gate.stopped:
                        break
                    for row in rows:
                        self._announce_keywords(row.flags)
                        if row.modseq > sel.modseq and row.uid in seqs and (
                                changedsince is None or row.modseq > changedsince):
                            self._note_known(sel, row.uid, row.modseq, row.flags)
                    self.write(data)
        finally:
            gate.close()
            if pending is not None:
                pending.addErrback(lambda f: None)  # failed or abandoned: nobody waits for it

    @defer.inlineCallbacks
    def _write_parts(self, msg, parts):
        """Write a FETCH response whose large sections are streamed from the message
        file in bounded slices, so a big message never sits whole in memory. The file
        is opened before anything is written: when it is gone (FileNotFoundError,
        expunged by another session), no partial response has been sent."""
        f = yield threads.deferToThread(self.account.open_message, msg.id)
        try:
            for part in parts:
                if not isinstance(part, FileRange):
                    self.write(part)
                    continue
                f.seek(part.start)
                yield self.conn.stream_file(f, part.end - part.start)
        finally:
            f.close()

    def _render_batch(self, fetchmod, jobs, atts, ctx, include_uid):
        """FetchResults; a FileNotFoundError in place of one whose file is gone."""
        out = []
        for m, seq in jobs:
            try:
                out.append(fetchmod.render_fetch(
                    m, seq, atts, lambda m=m: self.account.open_message(m.id), ctx, include_uid=include_uid,
                ))
            except FileNotFoundError as e:
                out.append(e)
        return out

    def _seqset_uid_bounds(self, seqset, uids):
        top = uids[-1] if uids else 0
        lo = min((top if a is STAR else a) for a, b in seqset.ranges) if seqset.ranges else 1
        hi = max((top if b is STAR else b) for a, b in seqset.ranges) if seqset.ranges else top
        return (min(lo, hi), max(lo, hi) if top else 2**32)

    @defer.inlineCallbacks
    def cmd_store(self, cmd):
        """STORE / UID STORE seqset [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags
        (RFC 9051 6.4.6, RFC 7162 3.1.3). Selected, read-write."""
        self._require_writable()
        sel = self.selected
        a = cmd.args
        uids = self._uids_in(a["seqset"], sel.uids, by_uid=cmd.uid)
        if a.get("unchangedsince") is not None:
            self._enable_condstore()
        try:
            changed, modified = yield self.account.store_flags(
                sel.id, uids, a["mode"], a["flags"], unchangedsince=a.get("unchangedsince"), origin=self
            )
        except se.FlagError as e:
            raise BAD(str(e))
        changed_uids = {u for u, _, _ in changed}
        if sel.contexts:
            sel.dirty.update(changed_uids)
        for uid, modseq, flags in changed:
            seq = sel.seq_of(uid)
            if seq is None:
                continue
            if a["silent"] and a.get("unchangedsince") is None:
                self._note_known(sel, uid, modseq, flags, told=False)
                continue
            self._note_known(sel, uid, modseq, flags)
            mod = f" MODSEQ ({modseq})" if self.condstore else ""
            self._untagged_fetch(seq, uid, f"FLAGS {self._fetch_flags(flags, uid)}{mod}", cmd.uid)
        if not a["silent"]:
            # Messages whose flags did not change still get their flags (RFC 9051 6.4.6).
            unchanged = [u for u in uids if u not in changed_uids and u not in modified]
            if unchanged:
                msgs = yield self.account.messages(sel.id, uids=unchanged)
                for m in msgs:
                    self._note_known(sel, m.uid, m.modseq, m.flags)
                    mod = f" MODSEQ ({m.modseq})" if self.condstore else ""
                    self._untagged_fetch(sel.seq_of(m.uid), m.uid, f"FLAGS {self._fetch_flags(m.flags, m.uid)}{mod}", cmd.uid)
        if modified:
            # RFC 7162 3.1.3: MODIFIED lists what failed the UNCHANGEDSINCE test.
            ids = modified if cmd.uid else [sel.seq_of(u) for u in modified]
            return f"[MODIFIED {r.format_seqset(sorted(ids))}] conditional STORE failed for some"
        return "STORE completed"

    def _transfer(self, cmd, operation):
        """The common part of COPY and MOVE: ``operation`` (the account's copy or move) on
        the messages of the sequence set; returns its Deferred of UID pairs."""
        sel = self.selected
        uids = self._uids_in(cmd.args["seqset"], sel.uids, by_uid=cmd.uid)
        dest = self._name(cmd.args["mailbox"])

        def failed(f):
            if f.check(se.MailboxNotFound):
                raise self._no_such_mailbox(dest)
            if f.check(se.QuotaExceeded):
                raise NO(f"[OVERQUOTA] {f.value}")
            if f.check(se.MailboxNotAllowed):
                raise NO(f"[CANNOT] {f.value}")
            return f

        return operation(sel.id, uids, dest, origin=self).addErrback(failed)

    @defer.inlineCallbacks
    def cmd_copy(self, cmd):
        """COPY / UID COPY seqset mailbox (RFC 4315 COPYUID). Selected."""
        pairs = yield self._transfer(cmd, self.account.copy)
        if not pairs:
            return "COPY completed, nothing copied"
        # The UIDVALIDITY comes with the result: the mailbox may be gone by now, deleted
        # by another session after the copy committed (the copy still happened: OK).
        return f"{_copyuid(pairs.uidvalidity, pairs)} COPY completed"

    @defer.inlineCallbacks
    def cmd_move(self, cmd):
        """MOVE / UID MOVE seqset mailbox (RFC 6851). Selected, read-write."""
        self._require_writable()
        pairs = yield self._transfer(cmd, self.account.move)
        if pairs:
            # RFC 6851 4.3: COPYUID in an untagged OK before the expunges. UIDVALIDITY
            # as for COPY: from the move's own transaction.
            self.untagged(f"OK {_copyuid(pairs.uidvalidity, pairs)} moved")
        return "MOVE completed"

    @defer.inlineCallbacks
    def cmd_search(self, cmd):
        """SEARCH / UID SEARCH [RETURN (...)] [CHARSET c] keys (RFC 9051 6.4.4, RFC 4731
        ESEARCH, RFC 5182 SEARCHRES). Selected."""
        sel = self.selected
        prog = cmd.args["program"]
        ret = prog.return_opts
        uids = list(sel.uids)
        try:
            found = yield searchmod.search(
                self.account, sel.id, uids, self._recent_key(prog.key), searchres=sel.searchres,
                now=datetime.now(timezone.utc), progress=self._note_progress,
            )
        except Exception as e:
            if ret is not None and "SAVE" in ret:
                sel.searchres = []  # RFC 5182 2.1: a failed SEARCH SAVE empties $
            if isinstance(e, searchmod.SearchError):
                raise BAD(str(e))
            raise
        nums = found if cmd.uid else [sel.seq_of(u) for u in found]
        nums = [n for n in nums if n is not None]
        if ret is None and (self.rev2 or self.uidonly):
            ret = ()  # RFC 9051 6.4.4: IMAP4rev2 always answers with ESEARCH; RFC 9586 3.4
        if ret is not None and "UPDATE" in ret:
            if any(isinstance(o, tuple) for o in ret):
                self.untagged(f"NO [NOUPDATE {r.string(cmd.tag, False).decode()}] PARTIAL results are not updated")
            else:
                self._new_context(cmd, sel, prog.key, found)
        if ret is None:
            highest = None
            if _uses_modseq(prog.key):
                self._enable_condstore()  # RFC 7162 3.1.5
                highest = yield self._highest_modseq(sel, found)
            mod = f" (MODSEQ {highest})" if highest is not None else ""
            self.untagged("SEARCH" + "".join(f" {n}" for n in nums) + mod)
            return f"{'UID ' if cmd.uid else ''}SEARCH completed"
        yield self._esearch(cmd, sel, found, nums, ret, _uses_modseq(prog.key), ordered=False)
        return f"{'UID ' if cmd.uid else ''}SEARCH completed"

    def _highest_modseq(self, sel, uids, mailbox_id=None):
        """Deferred: the highest mod-sequence of these messages (of the selected mailbox
        or ``mailbox_id``), None for none."""
        if not uids:
            return defer.succeed(None)
        d = self.account.messages(mailbox_id or sel.id, uids=sorted(uids), light=True)
        return d.addCallback(lambda msgs: max((m.modseq for m in msgs), default=None))

    @defer.inlineCallbacks
    def _esearch(self, cmd, sel, found, nums, ret, modseq, ordered, mailbox=None):
        """The ESEARCH response of SEARCH (RFC 4731) or SORT (RFC 5267 3.2 ESORT) with
        RETURN options MIN, MAX, ALL, COUNT, SAVE (RFC 5182) and PARTIAL (RFC 9394).
        ``found``: UIDs, ascending for SEARCH, in sort order for SORT (``ordered``);
        ``nums``: what is sent for them (UIDs or sequence numbers), in the same order.
        ``mailbox``: for the ESEARCH command (RFC 7377), the Mailbox searched: named
        in the correlator, always UIDs, no SAVE."""
        opts = {o for o in ret if isinstance(o, str)} or ({"ALL"} if not ret else set())
        partial = next((o[1:] for o in ret if isinstance(o, tuple) and o[0] == "PARTIAL"), None)
        picked = None  # indexes into found of what MIN and/or MAX return
        if found and opts - {"SAVE"} and opts - {"SAVE"} <= {"MIN", "MAX"}:
            picked = sorted({0 if "MIN" in opts else len(found) - 1, len(found) - 1 if "MAX" in opts else 0})
        window = _partial_window(len(found), *partial) if partial is not None else None
        if "SAVE" in opts:
            # RFC 5182 2.1: with MIN and/or MAX only, just those are saved; RFC 9394 3.2:
            # with PARTIAL, the messages in its range.
            if picked is not None and partial is None:
                saved = [found[i] for i in picked]
            elif partial is not None and not opts - {"SAVE", "MIN", "MAX"}:
                saved = found[window[0]:window[1]]
            else:
                saved = found
            sel.searchres = sorted(saved)
            if not opts - {"SAVE"} and partial is None:
                return
        highest = None
        if modseq:
            # RFC 7162 3.1.5 and 3.1.10: the highest mod-sequence of the messages
            # returned: with MIN/MAX alone just those, with PARTIAL alone its range.
            self._enable_condstore()
            if picked is not None and partial is None:
                returned = [found[i] for i in picked]
            elif partial is not None and not opts - {"SAVE"}:
                returned = found[window[0]:window[1]]
            else:
                returned = found
            highest = yield self._highest_modseq(sel, returned, mailbox.id if mailbox else None)
        if mailbox is None:
            parts = [f"(TAG {r.string(cmd.tag, False).decode()})"]
        else:
            # RFC 7377 2.1: the correlator names the mailbox and its UIDVALIDITY.
            parts = [f"(TAG {r.string(cmd.tag, False).decode()} MAILBOX "
                     f"{r.mailbox_name(mailbox.name, self.utf8).decode()} UIDVALIDITY {mailbox.uidvalidity})"]
        if cmd.uid or mailbox is not None:
            parts.append("UID")
        if nums:
            # RFC 5267 3.2: for SORT, MIN and MAX are the first and last in sort order,
            # and ALL lists the messages in sort order.
            if "MIN" in opts:
                parts.append(f"MIN {nums[0] if ordered else min(nums)}")
            if "MAX" in opts:
                parts.append(f"MAX {nums[-1] if ordered else max(nums)}")
            if "ALL" in opts:
                parts.append(f"ALL {r.format_seqset(nums if ordered else sorted(nums))}")
        if "COUNT" in opts:
            parts.append(f"COUNT {len(nums)}")
        if partial is not None:
            # RFC 9394 3.1: "PARTIAL" SP "(" range SP (sequence-set / "NIL") ")".
            chosen = nums[window[0]:window[1]]
            lo, hi = partial
            shown = f"{lo}:{hi}" if lo > 0 else f"-{-lo}:-{-hi}"
            parts.append(f"PARTIAL ({shown} {r.format_seqset(chosen) if chosen else 'NIL'})")
        if highest is not None:
            parts.append(f"MODSEQ {highest}")  # RFC 7162 3.1.5 with RFC 4731
        self.untagged("ESEARCH " + " ".join(parts))

    # -- METADATA (RFC 5464)

    def _metadata_box(self, name):
        return self._name(name) if name else ""

    @defer.inlineCallbacks
    def cmd_getmetadata(self, cmd):
        """GETMETADATA [(MAXSIZE n DEPTH d)] mailbox entries (RFC 5464 4.2). Authenticated."""
        a = cmd.args
        try:
            found = yield self.account.get_metadata(self._metadata_box(a["mailbox"]), a["entries"], a["depth"])
        except se.MailboxNotFound:
            raise NO("[NONEXISTENT] no such mailbox")
        longest = self._write_metadata(a["mailbox"], a["entries"], found, a["depth"], a["maxsize"])
        if longest:
            return f"[METADATA LONGENTRIES {longest}] GETMETADATA completed"
        return "GETMETADATA completed"

    def _write_metadata(self, mailbox, entries, found, depth, maxsize):
        """* METADATA mailbox (entry value ...) of ``found`` for the ``entries`` asked
        (NIL for those missing, with DEPTH 0 as Dovecot answers); values over ``maxsize``
        are left out: returns the size of the largest of those (RFC 5464 4.2.1), or 0."""
        out, longest = [], 0
        requested = {e.lower(): e for e in entries}
        names = list(requested) + sorted(n for n in found if n not in requested)
        for low in names:
            value = found.get(low)
            if value is None:
                if depth == 0:
                    out.append(r.astring(requested[low], self.utf8) + b" NIL")
                continue
            if maxsize is not None and len(value) > maxsize:
                longest = max(longest, len(value))
                continue
            data = r.literal8(value) if b"\x00" in value else r.string(value, self.utf8)
            out.append(r.astring(requested.get(low, low), self.utf8) + b" " + data)
        if out:
            box = r.mailbox_name(mailbox, self.utf8) if mailbox else b'""'
            self.write(b"* METADATA " + box + b" (" + b" ".join(out) + b")\r\n")
        return longest

    @defer.inlineCallbacks
    def cmd_setmetadata(self, cmd):
        """SETMETADATA mailbox (entry value ...) (RFC 5464 4.3): all or none. Authenticated."""
        a = cmd.args
        try:
            yield self.account.set_metadata(self._metadata_box(a["mailbox"]), a["items"], origin=self)
        except se.MailboxNotFound:
            raise NO("[NONEXISTENT] no such mailbox")
        except se.MetadataTooLarge as e:
            raise NO(f"[METADATA MAXSIZE {e.limit}] value too large")
        except se.MetadataTooMany as e:
            raise NO(f"[METADATA TOOMANY] {e}")
        return "SETMETADATA completed"

    @defer.inlineCallbacks
    def cmd_esearch(self, cmd):
        """ESEARCH [IN (sources)] [RETURN (...)] program (RFC 7377 MULTISEARCH): SEARCH
        over several mailboxes, results in UIDs with the mailbox in each ESEARCH
        response. Authenticated or selected. Mailboxes are searched one after the other;
        those without a match get no response (RFC 7377 2.1)."""
        a = cmd.args
        prog = a["program"]
        sources = a["sources"] or [("SELECTED", None)]
        sel = self.selected
        if any(f not in ("SELECTED", "SELECTED-DELAYED") for f, _ in sources) and _uses_numbers(prog.key):
            # RFC 7377 2.2: sequence numbers and $ mean nothing in other mailboxes.
            raise BAD("message sequence numbers and $ only refer to the selected mailbox")
        boxes = yield self._search_sources(sources)
        ret = prog.return_opts if prog.return_opts is not None else ("ALL",)
        now = datetime.now(timezone.utc)
        for i, mb in enumerate(boxes):
            self._progress = (i, len(boxes))
            selected = sel is not None and sel.id == mb.id and self.selected is sel
            view = list(sel.uids) if selected else (yield self.account.uids(mb.id))
            key = self._recent_key(_copy_key(prog.key), sel.recent if selected else ())
            try:
                found = yield searchmod.search(
                    self.account, mb.id, view, key, searchres=sel.searchres if selected else None, now=now,
                )
            except searchmod.SearchError as e:
                raise BAD(str(e))
            except se.MailboxNotFound:
                continue  # deleted meanwhile
            if not found:
                continue
            yield self._esearch(cmd, sel, found, list(found), ret, _uses_modseq(prog.key), False, mailbox=mb)
        return "ESEARCH completed"

    @defer.inlineCallbacks
    def _search_sources(self, sources):
        """The Mailboxes that RFC 7377 / RFC 5465 6 mailbox filters name, each once, in
        the order named (then by name)."""
        all_boxes = yield self.account.mailboxes()
        by_name = {mb.name: mb for mb in all_boxes}
        subscribed = None
        out, seen = [], set()

        def add(mb):
            if mb is not None and mb.id not in seen:
                seen.add(mb.id)
                out.append(mb)

        for word, names in sources:
            if word in ("SELECTED", "SELECTED-DELAYED"):
                if self.selected is not None:
                    add(next((mb for mb in all_boxes if mb.id == self.selected.id), None))
            elif word == "INBOXES":
                add(by_name.get(INBOX))  # the mailbox deliveries go to by default
            elif word == "PERSONAL":
                for mb in all_boxes:
                    add(mb)
            elif word == "SUBSCRIBED":
                if subscribed is None:
                    subscribed = set((yield self.account.subscriptions()))
                for mb in all_boxes:
                    if mb.name in subscribed:
                        add(mb)
            else:
                for name in names:
                    name = self._name(name)
                    if word == "MAILBOXES":
                        if name not in by_name:
                            raise NO("[NONEXISTENT] no such mailbox")
                        add(by_name[name])
                        continue
                    add(by_name.get(name))
                    prefix = name + "/"
                    for mb in all_boxes:
                        # SUBTREE: every mailbox below; SUBTREE-ONE: one level down.
                        if mb.name.startswith(prefix) and (word == "SUBTREE" or "/" not in mb.name[len(prefix):]):
                            add(mb)
        return out

    @defer.inlineCallbacks
    def cmd_sort(self, cmd):
        """SORT / UID SORT [RETURN (...)] (criteria) charset keys (RFC 5256, RFC 5267
        ESORT, RFC 9394 PARTIAL). Selected."""
        sel = self.selected
        a = cmd.args
        prog = a["program"]
        ret = prog.return_opts
        update = ret is not None and "UPDATE" in ret
        try:
            found = yield searchmod.sort(self.account, sel.id, list(sel.uids), a["criteria"],
                                         self._recent_key(prog.key), searchres=sel.searchres,
                                         with_keys=update, progress=self._note_progress)
        except searchmod.SearchError as e:
            if prog.return_opts is not None and "SAVE" in prog.return_opts:
                sel.searchres = []  # RFC 5182 2.1
            raise BAD(str(e))
        if update:
            found, keys = found
        found = [u for u in found if sel.seq_of(u) is not None]
        if update:
            if any(isinstance(o, tuple) for o in ret):
                self.untagged(f"NO [NOUPDATE {r.string(cmd.tag, False).decode()}] PARTIAL results are not updated")
            else:
                self._new_context(cmd, sel, prog.key, found, a["criteria"], keys)
        nums = found if cmd.uid else [sel.seq_of(u) for u in found]
        if prog.return_opts is not None:
            yield self._esearch(cmd, sel, found, nums, prog.return_opts, _uses_modseq(prog.key), ordered=True)
            return f"{'UID ' if cmd.uid else ''}SORT completed"
        self.untagged("SORT" + "".join(f" {n}" for n in nums))
        return f"{'UID ' if cmd.uid else ''}SORT completed"

    @defer.inlineCallbacks
    def cmd_thread(self, cmd):
        """THREAD / UID THREAD algorithm charset keys (RFC 5256). Selected."""
        sel = self.selected
        a = cmd.args
        try:
            structure = yield searchmod.thread(self.account, sel.id, list(sel.uids), a["algorithm"],
                                               self._recent_key(a["program"].key), searchres=sel.searchres,
                                               progress=self._note_progress)
        except searchmod.SearchError as e:
            raise BAD(str(e))
        mapping = (lambda u: u) if cmd.uid else sel.seq_of
        self.untagged("THREAD " + searchmod.format_thread(structure, mapping))
        return f"{'UID ' if cmd.uid else ''}THREAD completed"

    @defer.inlineCallbacks
    def cmd_replace(self, cmd):
        """REPLACE / UID REPLACE n mailbox message (RFC 8508): APPEND, then expunge the
        original. Selected, read-write."""
        self._require_writable()
        sel = self.selected
        uids = self._uids_in(cmd.args["seqset"], sel.uids, by_uid=cmd.uid)
        if len(uids) != 1:
            raise BAD("REPLACE takes exactly one message")
        m = cmd.args["message"]
        name = self._name(cmd.args["mailbox"])
        data = yield self._storable(m)
        try:
            msgs = yield self.account.append_many(name, [(data, m["flags"], m["date"])], origin=self)
        except se.MailboxNotFound:
            raise self._no_such_mailbox(name)
        except se.QuotaExceeded as e:
            raise NO(f"[OVERQUOTA] {e}")
        except se.FlagError as e:
            raise BAD(str(e))  # as APPEND; the original stays
        self.untagged(f"OK [APPENDUID {msgs.uidvalidity} {msgs[0].uid}] replacement appended")
        yield self.account.store_flags(sel.id, uids, "add", ["\\Deleted"], origin=self)
        yield self.account.expunge(sel.id, uids=uids, origin=self)
        return "REPLACE completed"


def _read_spool(spool):
    with open(spool.path, "rb") as f:
        return f.read()


def _partial_window(count, lo, hi):
    """(start, end) indexes of RFC 9394 3.1's partial range among ``count`` results:
    positions lo..hi from 1, or counted from the end when negative (-1 the last)."""
    if lo > 0:
        return min(lo - 1, count), min(hi, count)
    first, last = count + hi, count + lo + 1  # -1:-3 of 10 -> indexes 7..9
    return max(first, 0), max(last, 0)


# Commands that take message sequence numbers unless given as UID commands.
_SEQUENCE_COMMANDS = frozenset(("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "SORT", "THREAD"))


def _uses_sequence_numbers(cmd):
    """Whether a command uses message sequence numbers (RFC 9586 3.2): a non-UID
    FETCH/STORE/SEARCH/COPY/MOVE/SORT/THREAD, or a search program with a sequence set."""
    if cmd.name in _SEQUENCE_COMMANDS and not cmd.uid:
        return True
    prog = cmd.args.get("program") if isinstance(cmd.args, dict) else None
    return prog is not None and _any_key(prog.key, lambda k: k.op == "seqset")


def _uses_numbers(key):
    """Whether a search program has sequence numbers or $ (RFC 5182) in it."""
    return _any_key(key, lambda k: k.op == "seqset" or (k.op == "uid" and k.args[0].searchres))


def _any_key(key, pred):
    """Whether ``pred`` holds for a node of a search program (no recursion over client
    input)."""
    stack = [key]
    while stack:
        k = stack.pop()
        if pred(k):
            return True
        if k.op in ("and", "or", "not"):
            stack.extend(k.args)
    return False


def _copy_key(key):
    """A copy of a search program's tree (``_recent_key`` changes nodes in place)."""
    top = SearchKey(key.op, list(key.args))
    stack = [top]
    while stack:
        k = stack.pop()
        if k.op in ("and", "or", "not"):
            k.args = [SearchKey(a.op, list(a.args)) for a in k.args]
            stack.extend(k.args)
    return top


def _uses_modseq(key):
    """Whether a search program has a MODSEQ key (RFC 7162 3.1.5)."""
    return _any_key(key, lambda k: k.op == "modseq")


def _pattern_regex(pattern):
    """LIST pattern matcher: * matches anything, % anything but the delimiter (RFC 9051
    6.3.9). INBOX is case-insensitive (RFC 9051 5.1) and stored as "Inbox"."""
    if pattern[:5].lower() == "inbox" and (len(pattern) == 5 or pattern[5] in "/*%"):
        pattern = INBOX + pattern[5:]
    return ListPattern(pattern)


MAX_LIST_PATTERNS = 100  # patterns in one LIST (RFC 5258 allows a list); more get BAD
INLINE_LIST_WORK = 2000  # names x patterns matched on the reactor thread; more in a thread
MAX_LIST_WORK = 2_000_000  # characters x patterns mixing * and % for one LIST


class ListPattern:
    """A LIST pattern (RFC 9051 6.3.9: ``*`` matches anything, ``%`` anything but the
    hierarchy delimiter), matched without backtracking. A translation to a regex took
    exponential time for patterns such as ``*%*%*%...x`` from a client (found by the
    fuzzer), blocking the reactor.

    Runs of wildcards are merged first (any run with a ``*`` is ``*``, else ``%``). A
    pattern with more literal characters than a mailbox name can have never matches.
    Patterns with only ``*`` wildcards (the common ``*``, ``fz/*``) are matched segment by
    segment with ``str.find`` (leftmost matches suffice); with only ``%``, level by level
    (``%`` cannot cross a ``/``, so the levels pair up); with both, by a bit-parallel
    simulation of the pattern's automaton, linear in the name. ``fast`` says which."""

    __slots__ = ("match", "fast", "_lit", "_star", "_pct", "_final")

    def __init__(self, pattern):
        self.fast = True
        # Counted and merged by C code: a pattern of megabytes costs little here.
        if len(pattern) - pattern.count("*") - pattern.count("%") > MAX_MAILBOX_NAME:
            self.match = _never  # names are at most MAX_MAILBOX_NAME bytes
            return
        merged = _WILDCARD_RUN.sub(lambda m: "*" if "*" in m.group() else "%", pattern)
        toks = list(merged)
        has_star, has_pct = "*" in toks, "%" in toks
        if not has_star and not has_pct:
            self.match = merged.__eq__
        elif not has_pct:
            segs = merged.split("*")
            self.match = lambda name: _glob(segs, name)
        elif not has_star:
            levels = [lvl.split("%") for lvl in merged.split("/")]
            self.match = lambda name: _glob_levels(levels, name)
        else:
            self.fast = False
            self._build(toks)
            self.match = self._match_automaton

    def _build(self, toks):
        # At most 2 * MAX_MAILBOX_NAME + 1 tokens here, so these ints stay small.
        lit = {}
        star = pct = 0
        for i, t in enumerate(toks):
            bit = 1 << i
            if t == "*":
                star |= bit
            elif t == "%":
                pct |= bit
            else:
                lit[t] = lit.get(t, 0) | bit
        self._lit = lit
        self._star = star
        self._pct = pct
        self._final = 1 << len(toks)

    def _closure(self, state):
        # A wildcard may match nothing: from before it to after it.
        return state | ((state & (self._star | self._pct)) << 1)

    def _match_automaton(self, name):
        # Bit i of the state is set when the first i tokens matched a prefix of the name.
        state = self._closure(1)
        lit, star, pct = self._lit, self._star, self._pct
        for c in name:
            # A literal token advances; a wildcard stays (consumes c) unless it is % on
            # the hierarchy delimiter.
            stay = state & (star if c == "/" else star | pct)
            state = self._closure(((state & lit.get(c, 0)) << 1) | stay)
            if not state:
                return False
        return bool(state & self._final)


_WILDCARD_RUN = re.compile(r"[*%]{2,}")


def _never(name):
    return False


def _glob(segs, name):
    """Whether ``name`` matches literal segments joined by ``*`` (at least two)."""
    first, last = segs[0], segs[-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    pos, end = len(first), len(name) - len(last)
    for seg in segs[1:-1]:
        i = name.find(seg, pos, end)
        if i < 0:
            return False
        pos = i + len(seg)
    return True


def _glob_levels(levels, name):
    """``%``-only pattern, split at ``/``: each level of the name matches its level."""
    parts = name.split("/")
    if len(parts) != len(levels):
        return False
    for segs, part in zip(levels, parts):
        if len(segs) == 1:
            if segs[0] != part:
                return False
        elif not _glob(segs, part):
            return False
    return True


def _matching(names, patterns):
    return [n for n in names if any(p.match(n) for p in patterns)]


def _ancestors(names):
    """Every proper parent of the names ("a/b/c": "a/b" and "a")."""
    out = set()
    for n in names:
        i = n.rfind("/")
        while i > 0:
            out.add(n[:i])
            i = n.rfind("/", 0, i)
    return out


def _parents_of_unmatched(subs, matched):
    """The parents of subscribed mailboxes that no pattern matched."""
    matched = set(matched)
    return _ancestors(n for n in subs if n not in matched)


def _copyuid(uidvalidity, pairs):
    """The COPYUID response code (RFC 4315 3) for [(source uid, new uid)]."""
    return f"[COPYUID {uidvalidity} {_uidset([p[0] for p in pairs])} {_uidset([p[1] for p in pairs])}]"


def _uidset(uids):
    """A uid-set keeping the given order (COPYUID pairs source and destination UIDs by
    position, RFC 4315 3): consecutive ascending runs become ranges."""
    parts = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        parts.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(parts)
