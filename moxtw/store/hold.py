"""Expunged messages kept readable for the sessions that still show them.

RFC 9051 7.5.1 and RFC 2180 4.1: an IMAP session may not be told of an expunge at once
(not during FETCH, STORE or SEARCH, 7.4.1), and until it is, its client can FETCH every
message it has a sequence number for. So when messages leave a mailbox (EXPUNGE, MOVE
away), every session that has the mailbox selected *holds* them: the index rows, as they
were, stay here in memory, and expunged files stay on disk, until each of those sessions
has sent the EXPUNGE (or VANISHED) or left the mailbox. The last one to let go removes
the files.

Crash safety: the expunge transaction records each file in the ``held_file`` table
(schema 6) in the same COMMIT that removes its row; the file and that record go together
after release, and ``clean_held_files`` removes whatever a crash left when the account is
opened. A file is never removed while its row exists, and no acknowledged message is
touched.

Memory: at most ``MAX_ROWS`` rows are held per account; beyond that only files are, and
a FETCH of such a message is answered ``NO [EXPUNGEISSUED]`` as before.
"""

import bisect
import os

from twisted.logger import Logger

from moxtw.store import changes as ch

log = Logger(namespace="moxtw.store")

MAX_ROWS = 20000


class _Held:
    __slots__ = ("msg_id", "row", "unlink", "holders")

    def __init__(self, msg_id, row, unlink, holders):
        self.msg_id = msg_id
        self.row = row
        self.unlink = unlink
        self.holders = holders


class ExpungeHold:
    """Per account, on the reactor thread. ``remove(ids)``: removes the files of these
    message ids and their ``held_file`` rows (off the reactor thread, its business)."""

    def __init__(self, remove):
        self._remove = remove
        self._viewers = {}  # mailbox_id -> set of sessions with it selected
        self._viewing = {}  # session -> the mailbox_id it has selected
        self._held = {}  # (mailbox_id, uid) -> _Held
        self._by_session = {}  # session -> set of (mailbox_id, uid)
        self._rows = 0

    def __len__(self):
        return len(self._held)

    def view(self, session, mailbox_id):
        """``session`` selects ``mailbox_id`` (its view from now on includes what is
        removed later, until it is told)."""
        self.leave(session)
        self._viewers.setdefault(mailbox_id, set()).add(session)
        self._viewing[session] = mailbox_id

    def leave(self, session):
        """``session`` deselected, selected another mailbox or went away: it lets go of
        everything it held."""
        mailbox_id = self._viewing.pop(session, None)
        viewers = self._viewers.get(mailbox_id)
        if viewers is not None:
            viewers.discard(session)
            if not viewers:
                del self._viewers[mailbox_id]
        keys = self._by_session.pop(session, ())
        self._let_go(session, keys)

    def committed(self, changes):
        """Before the changes are published: removals become held by the mailbox's
        current viewers, or are removed at once when there are none."""
        gone = []
        for c in changes:
            if not isinstance(c, ch.ChangeRemoveUIDs) or not c.rows:
                continue
            viewers = self._viewers.get(c.mailbox_id)
            if not viewers:
                gone.extend(r["id"] for r in c.rows if c.unlink)
                continue
            for r in c.rows:
                key = (c.mailbox_id, r["uid"])
                keep = r if self._rows < MAX_ROWS else None
                self._rows += keep is not None
                self._held[key] = _Held(r["id"], keep, c.unlink, set(viewers))
                for s in viewers:
                    self._by_session.setdefault(s, set()).add(key)
        if gone:
            self._remove(gone)

    def release(self, session, mailbox_id, uids):
        """``session`` has told its client that these UIDs are gone."""
        mine = self._by_session.get(session)
        if not mine:
            return
        keys = [(mailbox_id, u) for u in uids if (mailbox_id, u) in mine]
        mine.difference_update(keys)
        if not mine:
            del self._by_session[session]
        self._let_go(session, keys)

    def rows(self, session, mailbox_id, uids):
        """The held index rows (dicts) among ``uids`` (ascending) that ``session`` still
        shows, by UID."""
        mine = self._by_session.get(session)
        if not mine:
            return []
        # Few held, many asked for (FETCH 1:*): look the held ones up in the sorted list.
        out = []
        for m, u in sorted(mine):
            if m != mailbox_id:
                continue
            i = bisect.bisect_left(uids, u)
            h = self._held.get((m, u))
            if i < len(uids) and uids[i] == u and h is not None and h.row is not None:
                out.append(h.row)
        return out

    def held_uids(self, session, mailbox_id):
        mine = self._by_session.get(session)
        return sorted(u for m, u in mine if m == mailbox_id) if mine else []

    def _let_go(self, session, keys):
        gone = []
        for key in keys:
            h = self._held.get(key)
            if h is None:
                continue
            h.holders.discard(session)
            if h.holders:
                continue
            del self._held[key]
            if h.row is not None:
                self._rows -= 1
            if h.unlink:
                gone.append(h.msg_id)
        if gone:
            self._remove(gone)


def clean_held_files(conn, maildir, message_file):
    """At account open: remove files a crash left held, and their records. Blocking."""
    ids = [r[0] for r in conn.execute("SELECT id FROM held_file")]
    if not ids:
        return 0
    for msg_id in ids:
        try:
            os.unlink(message_file(maildir, msg_id))
        except FileNotFoundError:
            pass
    conn.execute("DELETE FROM held_file")
    conn.commit()
    return len(ids)
