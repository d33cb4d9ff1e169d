"""Message threading at delivery time.

A new message joins the thread of the nearest ancestor found in the account by its
References and In-Reply-To message-ids (RFC 5322 3.6.4), as long as the base subject
(RFC 5256 2.1) matches; a reply whose ancestors are all unknown joins the most recent
message with the same base subject from the last four weeks. Otherwise it starts a
thread. Messages that arrived before an ancestor and started a thread of their own
(marked "missing link") are attached when that ancestor arrives.
"""

import json

SUBJECT_WINDOW = 28 * 24 * 3600


def ancestors(in_reply_to, references):
    """Message-ids from the root to the direct parent."""
    out = [r for r in references if r]
    for r in in_reply_to:
        if r and r not in out:
            out.append(r)
    return out


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
            " FROM message WHERE message_id = ? AND base_subject = ? AND id != ?"
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
    if message_id:
        _adopt_orphans(conn, msg_id, message_id, thread_id, parent_ids, base_subject)
    return thread_id


def _adopt_orphans(conn, msg_id, message_id, thread_id, parent_ids, base_subject):
    # Thread roots that referenced this message-id before it arrived.
    needle = '%' + json.dumps(message_id)[1:-1].replace("%", "\\%").replace("_", "\\_") + '%'
    rows = conn.execute(
        "SELECT id FROM message WHERE thread_missing_link = 1 AND thread_id = id"
        " AND id != ? AND base_subject = ?"
        " AND (refs LIKE ? ESCAPE '\\' OR in_reply_to LIKE ? ESCAPE '\\')",
        (msg_id, base_subject, needle, needle),
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
