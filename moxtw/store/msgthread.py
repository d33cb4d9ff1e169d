"""Message threading at delivery time.

A new message joins the thread of the nearest ancestor found in the account by its
References and In-Reply-To message-ids (RFC 5322 3.6.4), as long as the base subject
(RFC 5256 2.1) matches; a reply whose ancestors are all unknown joins the most recent
message with the same base subject from the last four weeks. Otherwise it starts a
thread. Messages that arrived before an ancestor and started a thread of their own
(marked "missing link") are attached when that ancestor arrives: each such root has a
row per message-id it waits for in ``thread_waiting``, so the lookup is by index.

Every step is an indexed lookup with a bounded result (at most MAX_ANCESTORS message-ids
of a message are looked at), so a delivery costs the same whatever the account's size
and however many messages share its base subject; only attaching waiting roots touches
more rows, once, for the messages of the threads it joins.
"""

import json

SUBJECT_WINDOW = 28 * 24 * 3600
MAX_ANCESTORS = 100  # the nearest ancestors of a message that are looked up


def ancestors(in_reply_to, references):
    """Message-ids from the root to the direct parent."""
    out = [r for r in references if r]
    for r in in_reply_to:
        if r and r not in out:
            out.append(r)
    return out[-MAX_ANCESTORS:]


def assign(conn, msg_id, message_id, in_reply_to, references, subject, base_subject, received):
    """Set the thread fields of message ``msg_id`` (already inserted). Returns thread id.

    ``base_subject`` as computed (any case); the stored column is lower case."""
    is_reply = subject.strip() != base_subject
    base_subject = base_subject.lower()
    chain = ancestors(in_reply_to, references)
    parent = None
    missing = False
    for depth, ref in enumerate(reversed(chain)):
        if ref == message_id:
            continue
        row = conn.execute(
            "SELECT id, thread_id, thread_parent_ids, thread_muted, thread_collapsed"
            " FROM message INDEXED BY message_message_id WHERE message_id = ? AND base_subject = ? AND id != ?"
            " ORDER BY id DESC LIMIT 1",
            (ref, base_subject, msg_id),
        ).fetchone()
        if row is not None:
            parent = row
            missing = depth > 0
            break
    if parent is None and chain == [] and is_reply and base_subject:
        # A reply or forward without usable references: match on the base subject.
        parent = conn.execute(
            "SELECT id, thread_id, thread_parent_ids, thread_muted, thread_collapsed"
            " FROM message WHERE base_subject = ? AND received >= ? AND id != ?"
            " ORDER BY received DESC, id DESC LIMIT 1",
            (base_subject, received - SUBJECT_WINDOW, msg_id),
        ).fetchone()
    if parent is not None:
        parent_ids = json.loads(parent["thread_parent_ids"]) + [parent["id"]]
        thread_id = parent["thread_id"]
        conn.execute(
            "UPDATE message SET thread_id = ?, thread_parent_ids = ?, thread_missing_link = ?,"
            " thread_muted = ?, thread_collapsed = ? WHERE id = ?",
            (
                thread_id,
                json.dumps(parent_ids),
                int(missing),
                parent["thread_muted"],
                parent["thread_collapsed"],
                msg_id,
            ),
        )
    else:
        parent_ids = []
        thread_id = msg_id
        conn.execute(
            "UPDATE message SET thread_id = ?, thread_parent_ids = '[]',"
            " thread_missing_link = ? WHERE id = ?",
            (msg_id, int(bool(chain)), msg_id),
        )
        if chain:
            conn.executemany(
                "INSERT OR IGNORE INTO thread_waiting (message_id, msg_id) VALUES (?, ?)",
                [(ref, msg_id) for ref in dict.fromkeys(chain) if ref != message_id],
            )
    if message_id:
        _adopt_orphans(conn, msg_id, message_id, thread_id, parent_ids, base_subject)
    return thread_id


def _adopt_orphans(conn, msg_id, message_id, thread_id, parent_ids, base_subject):
    # Thread roots that referenced this message-id before it arrived.
    rows = conn.execute(
        # CROSS JOIN: SQLite keeps this order, from the few waiting rows to their messages
        # (not from every message with the base subject).
        "SELECT m.id FROM thread_waiting w CROSS JOIN message m ON m.id = w.msg_id"
        " WHERE w.message_id = ? AND m.thread_missing_link = 1 AND m.thread_id = m.id"
        " AND m.id != ? AND m.base_subject = ?",
        (message_id, msg_id, base_subject),
    ).fetchall()
    prefix = parent_ids + [msg_id]
    for row in rows:
        root = row["id"]
        members = conn.execute(
            "SELECT id, thread_parent_ids FROM message WHERE thread_id = ?", (root,)
        ).fetchall()
        for m in members:
            new_parents = prefix + json.loads(m["thread_parent_ids"])
            conn.execute(
                "UPDATE message SET thread_id = ?, thread_parent_ids = ?,"
                " thread_missing_link = CASE WHEN id = ? THEN 0 ELSE thread_missing_link END"
                " WHERE id = ?",
                (thread_id, json.dumps(new_parents), root, m["id"]),
            )
        conn.execute("DELETE FROM thread_waiting WHERE msg_id = ?", (root,))


def forget(conn, msg_id):
    """A message leaves the account: it waits for nothing any more."""
    conn.execute("DELETE FROM thread_waiting WHERE msg_id = ?", (msg_id,))
