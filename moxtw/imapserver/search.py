"""IMAP SEARCH, SORT and THREAD evaluation over an account's index and message files.

Implements the search keys of RFC 9051 6.4.4 (with NEW/OLD/RECENT from RFC 3501 6.4.4: the
session rewrites them to UID sets of its recent messages before evaluation), OLDER/YOUNGER
(RFC 5032), "$" (RFC 5182), MODSEQ (RFC 7162 3.1.5), SAVEDBEFORE/SAVEDON/SAVEDSINCE and
SAVEDATESUPPORTED (RFC 8514), SORT and THREAD=ORDEREDSUBJECT/REFERENCES (RFC 5256) and
DISPLAYFROM/DISPLAYTO (RFC 5957).

Evaluation is planned so the index answers what it can. The top-level AND of a program is
turned into one ``SearchCriteria`` (flags, keywords, sizes, MODSEQ, OLDER/YOUNGER and UID
ranges exactly; INTERNALDATE and Date: ranges widened by a day as prefilters; BODY, TEXT
and HEADER strings through the store's trigram index of the search texts as prefilters).
OR/NOT subtrees made only of index keys are answered with index queries and set
operations. Whatever is left is checked per candidate message in a thread, in slices:
from the cached index row where possible (dates, subject, envelope addresses), from the
search texts kept in the index for BODY, TEXT and HEADER (``moxtw.message.searchtext``
defines them), and, for messages too large to have them indexed, from the message file,
read at most once. Both ways compare the same texts, so the index changes the speed of a
search, never its result.
"""

import bisect
import json
import math
import re
from datetime import datetime, time as dtime, timedelta, timezone

from twisted.internet import defer, threads

from moxtw.message import base_subject, decode_words, parse, parse_date, searchtext
from moxtw.message.searchtext import fold

# RFC 5322 3.6.8 field-name: printable ASCII except colon.
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
from moxtw.store.account import LIGHT_COLUMNS
from moxtw.store.errors import FlagError
from moxtw.store.model import FLAG_COLUMNS, SearchCriteria, from_unix, split_flags

from moxtw.imapserver.types import STAR


class SearchError(Exception):
    """A search program, sort criterion or thread algorithm that cannot be evaluated."""


# Candidate messages evaluated per thread hop (rows and search texts read per slice).
EVAL_SLICE = 2000
# ... and at most about this many bytes of messages whose texts are loaded at once.
EVAL_TEXT_BYTES = 64 * 1024 * 1024
# At most this many UID ranges go into one index query; more are replaced by their span
# (the exact set is applied in memory anyway).
MAX_PUSHED_RANGES = 100

# At most this many AND/OR/NOT nodes on any path of a program (the parser refuses deeper
# nesting first); evaluation recurses over the tree, so its depth must stay bounded.
MAX_DEPTH = 100

# SEARCH keys of the system flags (RFC 9051 6.4.4) and the index columns they test.
_FLAG_KEYS = {col: col for col in FLAG_COLUMNS}
_UNFLAG_KEYS = {"un" + col: col for col in FLAG_COLUMNS}

# Cost classes of nodes; cheaper children of AND/OR are evaluated first.
LOCAL, INDEX, ROW, FILE = 0, 1, 2, 3

_LOCAL_LEAVES = {"all", "old", "new", "recent", "savedatesupported", "uid", "seqset"}
_INDEX_LEAVES = (
    set(_FLAG_KEYS) | set(_UNFLAG_KEYS)
    | {"keyword", "unkeyword", "larger", "smaller", "modseq", "older", "younger"}
)
_ROW_LEAVES = {
    "before", "on", "since", "sentbefore", "senton", "sentsince",
    "savedbefore", "savedon", "savedsince", "subject", "from", "to", "cc", "bcc",
}
_FILE_LEAVES = {"header", "body", "text"}
# Leaves that need the full index row (envelope, Date:), not LIGHT_COLUMNS.
_FULL_ROW_LEAVES = {"sentbefore", "senton", "sentsince", "from", "to", "cc", "bcc"}

# ENVELOPE positions (RFC 9051 7.5.2) of the address fields.
_ENVELOPE_FIELD = {"from": 2, "to": 5, "cc": 6, "bcc": 7}

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_casemap(s):
    """The i;ascii-casemap comparator's key (RFC 4790 9.2), the SORT default (RFC 5256):
    a-z mapped to A-Z, so "_" and "[" sort after the letters."""
    return s.translate(_ASCII_UPPER)


def _default_reader(account):
    def read(msg):
        with account.open_message(msg.id) as f:
            return f.read()

    return read


# -- program analysis


def _leaf_kind(op):
    if op in _LOCAL_LEAVES:
        return LOCAL
    if op in _INDEX_LEAVES:
        return INDEX
    if op in _ROW_LEAVES:
        return ROW
    if op in _FILE_LEAVES:
        return FILE
    raise SearchError(f"unknown search key {op!r}")


def _kinds(key, memo):
    """Fill ``memo`` (id(node) -> cost class) for every node of ``key``, children before
    parents, without recursion; a program nested deeper than MAX_DEPTH is refused."""
    stack = [(key, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if node.op not in ("and", "or", "not"):
            memo[id(node)] = _leaf_kind(node.op)
        elif done:
            memo[id(node)] = max((memo[id(a)] for a in node.args), default=LOCAL)
        elif depth > MAX_DEPTH:
            raise SearchError("search program nested too deeply")
        else:
            stack.append((node, depth, True))
            stack.extend((a, depth + 1, False) for a in node.args)


def _conjuncts(node):
    """The top-level AND of a program, flattened."""
    out = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op == "and":
            stack.extend(reversed(n.args))
        else:
            out.append(n)
    return out


def _resolve_set(seqset, view, is_uid, searchres):
    """The UIDs of the session's view selected by a sequence set or UID set."""
    if seqset.searchres:
        # RFC 5182 2.1: "$" is the saved result, empty when nothing was saved; for SEARCH
        # and UID SEARCH alike it names the same messages.
        return set(searchres or ()) & set(view)
    if not view:
        return set()
    out = set()
    if is_uid:
        top = view[-1]  # RFC 9051 9: "*" is the largest UID in use
        for lo, hi in seqset.ranges:
            lo = top if lo is STAR else lo
            hi = top if hi is STAR else hi
            if lo > hi:
                lo, hi = hi, lo
            out.update(view[bisect.bisect_left(view, lo):bisect.bisect_right(view, hi)])
    else:
        n = len(view)
        for lo, hi in seqset.ranges:
            lo = n if lo is STAR else lo
            hi = n if hi is STAR else hi
            if lo > hi:
                lo, hi = hi, lo
            # A number above the message count names no message, as in Dovecot (and
            # imaptest's esearch group): a client's saved range after an expunge must not
            # turn its SEARCH into an error (RFC 9051 6.4.4 answers what matches).
            out.update(view[max(lo, 1) - 1:min(hi, n)])
    return out


def _uid_ranges(seqset, view):
    """(lo, hi) UID ranges of a UID set, "*" resolved, for the index query."""
    if seqset.searchres or not view:
        return None
    top = view[-1]
    out = []
    for lo, hi in seqset.ranges:
        lo = top if lo is STAR else lo
        hi = top if hi is STAR else hi
        out.append((min(lo, hi), max(lo, hi)))
    if len(out) > MAX_PUSHED_RANGES:
        out = [(min(r[0] for r in out), max(r[1] for r in out))]
    return out


def _keyword(kw):
    """The stored (lower-cased) form of a KEYWORD argument, or None when no message can
    carry it (not a valid keyword, or a system flag)."""
    if not kw or kw.startswith("\\"):
        return None
    try:
        _, keywords = split_flags([kw])
    except FlagError:
        return None
    return keywords[0] if keywords else None


def _day_start(day, delta_days=0):
    return datetime.combine(day + timedelta(days=delta_days), dtime(0), timezone.utc)


def _ceil_instant(now, seconds):
    # Stored times are whole seconds: t >= x holds exactly when t >= ceil(x).
    return datetime.fromtimestamp(math.ceil(now.timestamp() - seconds), timezone.utc)


class _Criteria:
    """Accumulates the index conditions of a conjunction into one SearchCriteria."""

    def __init__(self):
        self.c = SearchCriteria()
        self.empty = False  # a condition no message can meet (KEYWORD of an invalid keyword)

    def add_flag(self, flag, want):
        if want:
            self.c.flags_set += (flag,)
        else:
            self.c.flags_unset += (flag,)

    def since(self, attr, value):
        cur = getattr(self.c, attr)
        setattr(self.c, attr, value if cur is None else max(cur, value))

    def before(self, attr, value):
        cur = getattr(self.c, attr)
        setattr(self.c, attr, value if cur is None else min(cur, value))

    def add_exact(self, node, now):
        """Add an INDEX leaf; its condition is then answered exactly."""
        op, args = node.op, node.args
        if op in _FLAG_KEYS:
            self.add_flag("\\" + _FLAG_KEYS[op], True)
        elif op in _UNFLAG_KEYS:
            self.add_flag("\\" + _UNFLAG_KEYS[op], False)
        elif op in ("keyword", "unkeyword"):
            kw = _keyword(args[0])
            if kw is None:
                # RFC 9051 6.4.4: KEYWORD matches messages with the flag set; nothing can
                # carry an invalid keyword, so UNKEYWORD of it matches everything.
                self.empty = self.empty or op == "keyword"
            else:
                self.add_flag(kw, op == "keyword")
        elif op == "larger":
            self.since("larger", args[0])
        elif op == "smaller":
            self.before("smaller", args[0])
        elif op == "modseq":
            self.since("modseq_min", args[0])  # RFC 7162 3.1.5: MODSEQ >= value
        elif op == "older":
            # RFC 5032 3: OLDER n: internal date more than n seconds before now.
            self.before("received_before", _ceil_instant(now, args[0]))
        elif op == "younger":
            # RFC 5032 3: YOUNGER n: internal date within the last n seconds.
            self.since("received_since", _ceil_instant(now, args[0]))
        else:
            raise SearchError(f"not an index key: {op}")

    def add_prefilter(self, node):
        """Add what the index can tell about a ROW/FILE leaf: a superset of its matches."""
        op, args = node.op, node.args
        # INTERNALDATE and Date: are compared in their own zone (RFC 9051 6.4.4,
        # "disregarding time and timezone"); zone offsets are below a day, so a range
        # widened by one day on each side cannot lose a message.
        if op in ("before", "on", "since", "sentbefore", "senton", "sentsince"):
            prefix = "sent" if op.startswith("sent") else "received"
            base = op[4:] if op.startswith("sent") else op
            day = args[0]
            if base in ("before", "on"):
                self.before(prefix + "_before", _day_start(day, 2 if base == "on" else 1))
            if base in ("since", "on"):
                self.since(prefix + "_since", _day_start(day, -1))
        elif op == "body":
            self.c.body_contains += (args[0],)
        elif op == "text":
            self.c.text_contains += (args[0],)
        elif op == "header":
            self.c.header_contains += ((args[0], args[1]),)

    def criteria(self, view, uid_ranges):
        self.c.uid_ranges = uid_ranges if uid_ranges is not None else _span(view)
        return self.c


def _span(view):
    return [(view[0], view[-1])] if view else [(1, 0)]


def _runs(uids):
    """Sorted UIDs as (lo, hi) runs and single UIDs, for Account.messages."""
    out = []
    i = 0
    n = len(uids)
    while i < n:
        j = i
        while j + 1 < n and uids[j + 1] == uids[j] + 1:
            j += 1
        if j - i >= 2:
            out.append((uids[i], uids[j]))
        else:
            out.extend(uids[i:j + 1])
        i = j + 1
    return out


# -- per-message evaluation


# The index columns the per-message evaluation reads: all, for keys on the envelope or the
# Date: header; LIGHT_COLUMNS for other keys on rows; these for BODY, TEXT and HEADER only.
_TEXT_COLUMNS = "id, uid, text_indexed"


class _Candidate:
    """A message's index row, with what the evaluation needs of a Message (``read_file``
    gets these), built more cheaply."""

    __slots__ = ("row", "id", "uid")

    def __init__(self, row):
        self.row = row
        self.id = row["id"]
        self.uid = row["uid"]

    @property
    def received(self):
        return from_unix(self.row["received"], self.row["received_tz"])

    @property
    def saved(self):
        return from_unix(self.row["saved"])

    @property
    def subject(self):
        return self.row["subject"]

    @property
    def envelope(self):
        return json.loads(self.row["envelope"])


class _Loaded:
    """A message's search texts (moxtw.message.searchtext): from the index when it has
    them (``texts``: indexed header and body text), else from the message file, read and
    parsed on first use."""

    __slots__ = ("msg", "read", "texts", "missing", "_fields", "_body", "_header_flat")

    def __init__(self, msg, read, texts=None):
        self.msg = msg
        self.read = read
        self.texts = texts
        self.missing = False
        self._fields = None
        self._body = None
        self._header_flat = None

    def _load_file(self):
        self.texts = ("", "")
        self._body = ""
        if self.msg.row["text_indexed"]:
            # Indexed, but the text is gone: expunged meanwhile, it no longer matches
            # (a damaged index with texts missing is an error verifydata reports).
            self.missing = True
            return
        try:
            data = self.read(self.msg)
        except FileNotFoundError:
            # Expunged by another session and cleaned up: it no longer matches.
            self.missing = True
            return
        root = parse(data)
        self._fields = searchtext.header_fields(root)
        self._body = searchtext.body_text(root, data)
        self.texts = (searchtext.header_text(self._fields), None)

    def headers(self):
        """[(name, value)] of the message header, lower-cased, values decoded."""
        if self._fields is None:
            if self.texts is None:
                self._load_file()
            if self._fields is None:
                self._fields = searchtext.parse_header_text(self.texts[0])
        return self._fields

    def field_values(self, name):
        """Values of the fields named ``name`` (lower-cased)."""
        if not _FIELD_NAME.match(name):
            return []  # RFC 5322 3.6.8: no field has this name (and ": " would mislead)
        if self._fields is None and self.texts is None:
            self._load_file()
        if self._fields is not None:
            return [v for n, v in self._fields if n == name]
        # Straight from the indexed text: a newline starts every field (searchtext).
        text = self.texts[0]
        marker = "\n" + searchtext.escape(name) + ": "
        out = []
        i = text.find(marker)
        while i >= 0:
            start = i + len(marker)
            end = text.find("\n", start)
            if end < 0:
                end = len(text)
            out.append(searchtext.unescape(text[start:end]))
            i = text.find(marker, end)
        return out

    def body_text(self):
        """The lower-cased body text."""
        if self._body is None:
            if self.texts is None:
                self._load_file()
            else:
                self._body = searchtext.unescape(self.texts[1])
        return self._body

    def header_contains(self, needle):
        """Whether a ``name: value`` line of the header contains ``needle`` (lower-cased)."""
        if "\n" in needle:
            return any(needle in f"{n}: {v}" for n, v in self.headers())
        if self._header_flat is None:
            if self.texts is None:
                self._load_file()
            # Lines are "\n"-separated: without a newline, the needle cannot span two.
            self._header_flat = searchtext.unescape(self.texts[0])
        return needle in self._header_flat


def _envelope_addresses(env, field):
    """Addresses of an envelope field as displayed: 'Name <local@domain>', groups as
    'group: members;'."""
    if not env or len(env) <= field or not env[field]:
        return ""
    out = []
    for name, _adl, mailbox, host in env[field]:
        if host is None:
            out.append(f"{mailbox}:" if mailbox is not None else ";")
            continue
        addr = f"{mailbox}@{host}" if host else (mailbox or "")
        name = decode_words(name) if name else ""
        out.append(f"{name} <{addr}>" if name else addr)
    return ", ".join(out)


def _sent_date(msg):
    """The Date: header's date in its own zone; None without a (parseable) Date:."""
    if msg.row.get("sent") is None:
        return None
    env = msg.envelope
    dt = parse_date(env[0]) if env and env[0] else None
    if dt is None:
        dt = datetime.fromtimestamp(msg.row["sent"], timezone.utc)
    return dt.date()


def _compare_day(op, value, day):
    if value is None:
        return False
    if op.endswith("before"):
        return value < day
    if op.endswith("on"):
        return value == day
    return value >= day


class _Evaluator:
    def __init__(self, kinds, sets, now, read):
        self.kinds = kinds
        self.sets = sets  # id(node) -> set of UIDs, for subtrees answered without rows
        self.now = now
        self.read = read

    def order(self, nodes):
        return sorted(nodes, key=lambda n: 0 if id(n) in self.sets else self.kinds[id(n)])

    def match(self, node, msg, loaded):
        s = self.sets.get(id(node))
        if s is not None:
            return msg.uid in s
        op, args = node.op, node.args
        if op == "and":
            return all(self.match(a, msg, loaded) for a in self.order(args))
        if op == "or":
            return any(self.match(a, msg, loaded) for a in self.order(args))
        if op == "not":
            return not self.match(args[0], msg, loaded)
        return self.leaf(op, args, msg, loaded)

    def leaf(self, op, args, msg, loaded):
        row = msg.row
        if op in ("all", "old", "savedatesupported"):
            return True
        if op in ("new", "recent"):
            return False
        if op in _FLAG_KEYS:
            return bool(row[_FLAG_KEYS[op]])
        if op in _UNFLAG_KEYS:
            return not row[_UNFLAG_KEYS[op]]
        if op in ("keyword", "unkeyword"):
            kw = _keyword(args[0])
            has = kw is not None and kw in json.loads(row["keywords"])
            return has if op == "keyword" else not has
        if op == "larger":
            return row["size"] > args[0]
        if op == "smaller":
            return row["size"] < args[0]
        if op == "modseq":
            return row["modseq"] >= args[0]
        if op in ("older", "younger"):
            limit = math.ceil(self.now.timestamp() - args[0])
            return row["received"] < limit if op == "older" else row["received"] >= limit
        if op in ("before", "on", "since"):
            # RFC 9051 6.4.4: the INTERNALDATE's date, in the zone it was given in.
            return _compare_day(op, msg.received.date(), args[0])
        if op in ("sentbefore", "senton", "sentsince"):
            # RFC 9051 6.4.4: the Date: header's date; without one, nothing matches.
            return _compare_day(op, _sent_date(msg), args[0])
        if op in ("savedbefore", "savedon", "savedsince"):
            # RFC 8514 4: the save date, taken in UTC (the store keeps no zone for it).
            return _compare_day(op, msg.saved.astimezone(timezone.utc).date(), args[0])
        if op == "subject":
            return fold(args[0]) in fold(msg.subject or "")
        if op in _ENVELOPE_FIELD:
            # RFC 9051 6.4.4: FROM/TO/CC/BCC search the envelope's address fields.
            text = _envelope_addresses(msg.envelope, _ENVELOPE_FIELD[op])
            return fold(args[0]) in fold(text)
        if op == "header":
            name, needle = args[0].lower(), fold(args[1])
            values = loaded.field_values(name)
            if needle == "":
                return bool(values)  # RFC 9051 6.4.4: "" matches all with the field
            return any(needle in v for v in values)
        if op == "body":
            return fold(args[0]) in loaded.body_text()
        if op == "text":
            # RFC 9051 6.4.4: TEXT: in the header or the body.
            needle = fold(args[0])
            return needle in loaded.body_text() or loaded.header_contains(needle)
        raise SearchError(f"unknown search key {op!r}")

    def run(self, rows, residual):
        """UIDs of the messages of index ``rows`` (Account.rows) matching all of
        ``residual``."""
        out = []
        residual = self.order(residual)
        for row in rows:
            msg = _Candidate(row)
            loaded = _Loaded(msg, self.read, row.get("search_texts"))
            if all(self.match(n, msg, loaded) for n in residual) and not loaded.missing:
                out.append(msg.uid)
        return out


# -- SEARCH


def search(account, mailbox_id, uids, key, *, searchres=None, now=None, read_file=None, progress=None):
    """Deferred[list[int]]: UIDs of the session's view ``uids`` (uids[i] is message
    i+1) that match SearchKey ``key``, ascending. ``searchres``: the saved result for
    "$" (RFC 5182); ``now``: for OLDER/YOUNGER; ``read_file(msg) -> bytes`` reads the
    file of a message (``msg.id``, ``msg.uid``) whose search texts are not indexed
    (default: ``account.open_message``), called in a thread. ``progress(done, total)``:
    called as messages are checked one by one (for INPROGRESS, RFC 9585)."""
    return defer.Deferred.fromCoroutine(
        _search(account, mailbox_id, list(uids), key, searchres, now, read_file, progress=progress)
    )


async def _search(account, mailbox_id, view, key, searchres, now, read_file, want_rows=False, progress=None):
    now = now or datetime.now(timezone.utc)
    read = read_file or _default_reader(account)
    kinds = {}
    _kinds(key, kinds)
    if not view:
        return ([], []) if want_rows else []
    view = sorted(view)
    sets = {}

    def local_set(node):
        # LOCAL subtrees: UID and sequence sets, ALL, OLD, ...
        op = node.op
        if op in ("all", "old", "savedatesupported"):
            return set(view)
        if op in ("new", "recent"):
            return set()  # sessions rewrite these first (RFC 3501 6.4.4); without one nothing is recent
        if op in ("uid", "seqset"):
            return _resolve_set(node.args[0], view, op == "uid", searchres)
        parts = [local_set(a) for a in node.args]
        if op == "and":
            return set(view).intersection(*parts) if parts else set(view)
        if op == "or":
            return set().union(*parts)
        if op == "not":
            return set(view) - parts[0]
        raise SearchError(f"unknown search key {op!r}")

    existing = []

    async def all_existing():
        if not existing:
            everything = SearchCriteria(uid_ranges=_span(view))
            existing.append(set(await account.search(mailbox_id, everything)))
        return existing[0]

    async def index_set(node):
        # Subtrees of index keys inside OR/NOT: one index query per leaf, set algebra.
        op = node.op
        if kinds[id(node)] == LOCAL:
            return local_set(node)
        if op in ("and", "or", "not"):
            parts = [await index_set(a) for a in node.args]
            if op == "and":
                return set.intersection(*parts)
            if op == "or":
                return set().union(*parts)
            return (await all_existing()) - parts[0]
        crit = _Criteria()
        crit.add_exact(node, now)
        if crit.empty:
            return set()
        return set(await account.search(mailbox_id, crit.criteria(view, None)))

    # Plan the top-level AND.
    crit = _Criteria()
    uid_ranges = None
    candidates = set(view)
    residual = []
    for node in _conjuncts(key):
        k = kinds[id(node)]
        op = node.op
        if k == LOCAL:
            candidates &= local_set(node)
            if op == "uid" and uid_ranges is None:
                uid_ranges = _uid_ranges(node.args[0], view)
        elif k == INDEX and op not in ("or", "not"):
            crit.add_exact(node, now)
        elif k == INDEX:
            sets[id(node)] = await index_set(node)
            candidates &= sets[id(node)]
        else:
            crit.add_prefilter(node)
            residual.append(node)
    if crit.empty or not candidates:
        return ([], []) if want_rows else []
    candidates &= set(await account.search(mailbox_id, crit.criteria(view, uid_ranges)))
    if not residual and not want_rows:
        return sorted(candidates)
    # UID and sequence sets inside OR/NOT of the residual are tested as sets.
    stack = list(residual)
    while stack:
        n = stack.pop()
        if kinds[id(n)] == LOCAL:
            sets[id(n)] = local_set(n)
        elif n.op in ("and", "or", "not"):
            stack.extend(n.args)
    ordered = sorted(candidates)
    if residual:
        ordered = await _evaluate(account, mailbox_id, ordered, residual, kinds, sets, now, read, progress)
    if want_rows:
        messages = await account.messages(mailbox_id, uids=_runs(ordered)) if ordered else []
        return ordered, messages
    return ordered


async def _evaluate(account, mailbox_id, uids, residual, kinds, sets, now, read, progress=None):
    """The UIDs of ``uids`` matching all ``residual`` keys, checked per message in slices:
    the rows (and search texts) of a slice are read, then evaluated in a thread, so memory
    stays bounded and other work goes on in between."""
    leaves = _leaf_ops(residual)
    if leaves & _FULL_ROW_LEAVES:
        columns = "*"
    elif leaves - _FILE_LEAVES - _LOCAL_LEAVES:
        columns = LIGHT_COLUMNS
    else:
        columns = _TEXT_COLUMNS
    need_text = bool(leaves & _FILE_LEAVES)
    evaluator = _Evaluator(kinds, sets, now, read)
    matched = []
    for i in range(0, len(uids), EVAL_SLICE):
        chunk = uids[i:i + EVAL_SLICE]
        for part in (await _text_bounded(account, mailbox_id, chunk) if need_text else [chunk]):
            rows = await account.rows(mailbox_id, _runs(part), columns, texts=need_text)
            matched += await threads.deferToThread(evaluator.run, rows, residual)
        if progress is not None:
            progress(min(i + EVAL_SLICE, len(uids)), len(uids))
    return matched


async def _text_bounded(account, mailbox_id, uids):
    """``uids`` split so the search texts loaded for one part stay under
    EVAL_TEXT_BYTES (message sizes bound their texts); at least one message a part."""
    sized = await account.rows(mailbox_id, _runs(uids), "id, uid, text_indexed, size")
    parts, current, total = [], [], 0
    for r in sized:
        if current and total + r["size"] > EVAL_TEXT_BYTES:
            parts.append(current)
            current, total = [], 0
        current.append(r["uid"])
        total += r["size"]
    if current:
        parts.append(current)
    return parts


def _leaf_ops(nodes):
    out = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n.op in ("and", "or", "not"):
            stack.extend(n.args)
        else:
            out.add(n.op)
    return out


# -- SORT


SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")


def _first_address(msg, field):
    env = msg.envelope
    if not env or not env[field]:
        return None
    for addr in env[field]:
        # A group's start marker (RFC 9051 7.5.2: NIL host, the group name as mailbox)
        # stands for the group: Dovecot sorts "team: a@b;" on "team". End markers (all
        # NIL) are skipped.
        if addr[2] is not None:
            return addr
    return None


def _sent_time(msg):
    # RFC 5256 2.2: the Date: header's time in UTC, or INTERNALDATE without one.
    sent = msg.row.get("sent")
    return sent if sent is not None else msg.row["received"]


def _sort_key(name, msg):
    if name == "ARRIVAL":
        return msg.row["received"]
    if name == "DATE":
        return _sent_time(msg)
    if name == "SIZE":
        return msg.row["size"]
    if name == "SUBJECT":
        # RFC 5256 3: base subject, i;ascii-casemap.
        return ascii_casemap(base_subject(msg.subject or ""))
    if name in ("FROM", "TO", "CC"):
        # RFC 5256 3: addr-mailbox of the first address; empty when there is none.
        addr = _first_address(msg, _ENVELOPE_FIELD[name.lower()])
        return ascii_casemap(addr[2] or "") if addr else ""
    if name in ("DISPLAYFROM", "DISPLAYTO"):
        # RFC 5957 3: the decoded display name of the first address, else its addr-spec.
        addr = _first_address(msg, _ENVELOPE_FIELD[name[7:].lower()])
        if addr is None:
            return ""
        display = decode_words(addr[0]).strip() if addr[0] else ""
        if not display:
            display = f"{addr[2]}@{addr[3]}" if addr[3] else (addr[2] or "")
        return ascii_casemap(display)
    raise SearchError(f"unknown sort criterion {name!r}")


def sort_messages(messages, criteria):
    """UIDs of ``messages`` (in mailbox order) sorted by [(criterion, reverse)]."""
    for name, _ in criteria:
        if name.upper() not in SORT_KEYS:
            raise SearchError(f"unknown sort criterion {name!r}")
    ordered = list(messages)
    # Stable sorts from the last criterion to the first; ties keep mailbox order
    # (RFC 5256 3: "sorted according to the order in which they appear in the mailbox").
    for name, reverse in reversed(criteria):
        name = name.upper()
        ordered.sort(key=lambda m: _sort_key(name, m), reverse=bool(reverse))
    return [m.uid for m in ordered]


def sort_keys(messages, criteria):
    """{uid: (key per criterion)} of ``messages``: what ``sort_messages`` compares, kept
    by sort contexts (RFC 5267 4) to place later additions without sorting again."""
    names = [name.upper() for name, _ in criteria]
    return {m.uid: tuple(_sort_key(n, m) for n in names) for m in messages}


def sort(account, mailbox_id, uids, criteria, key, *, searchres=None, now=None, read_file=None,
         with_keys=False, progress=None):
    """Deferred[list[int]]: RFC 5256 SORT. ``criteria``: [(name, reverse)] with names
    from SORT_KEYS; returns the UIDs of matching messages in sort order; ``with_keys``:
    (those UIDs, ``sort_keys`` of them)."""

    async def run():
        for name, _ in criteria:
            if name.upper() not in SORT_KEYS:
                raise SearchError(f"unknown sort criterion {name!r}")
        _, messages = await _search(
            account, mailbox_id, list(uids), key, searchres, now, read_file, want_rows=True,
            progress=progress,
        )
        messages.sort(key=lambda m: m.uid)
        if with_keys:
            return await threads.deferToThread(
                lambda: (sort_messages(messages, criteria), sort_keys(messages, criteria))
            )
        return await threads.deferToThread(sort_messages, messages, criteria)

    return defer.Deferred.fromCoroutine(run())


# -- THREAD


_REFWD = re.compile(r"^\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:", re.IGNORECASE)
_FWD_TRAILER = re.compile(r"\(fwd\)\s*$", re.IGNORECASE)


def is_reply_or_forward(subject):
    """RFC 5256 2.1: the subject has a subj-refwd leader, a "(fwd)" trailer or is a
    "[fwd: ...]" wrapper."""
    s = subject or ""
    return bool(
        _REFWD.match(s) or _FWD_TRAILER.search(s) or s.lstrip().lower().startswith("[fwd:")
    )


class _Container:
    __slots__ = ("msg", "seq", "parent", "children", "subject")

    def __init__(self, msg=None, seq=0):
        self.msg = msg  # None: a dummy
        self.seq = seq
        self.parent = None
        self.children = []

    def is_ancestor_of(self, other):
        p = other
        while p is not None:
            if p is self:
                return True
            p = p.parent
        return False

    def unlink(self):
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link(self, child):
        child.parent = self
        self.children.append(child)


def _date_key(c):
    # RFC 5256 REFERENCES step 5/7: a dummy sorts by its first child; ties by sequence.
    while c.msg is None and c.children:
        c = c.children[0]
    if c.msg is None:
        return (0, 0)
    return (_sent_time(c.msg), c.seq)


def _postorder(top):
    out = []
    stack = [(top, False)]
    while stack:
        c, done = stack.pop()
        if done:
            out.append(c)
            continue
        stack.append((c, True))
        for child in c.children:
            stack.append((child, False))
    return out


def _structure(containers):
    """(uid or None, [children]) tuples from containers, built without recursion."""
    result = []
    stack = [(c, result) for c in reversed(containers)]
    while stack:
        c, into = stack.pop()
        kids = []
        into.append((c.msg.uid if c.msg is not None else None, kids))
        stack.extend((child, kids) for child in reversed(c.children))
    return result


def thread_ordered_subject(messages):
    """RFC 5256 3 ORDEREDSUBJECT over messages in mailbox order."""
    seq = {m.uid: i for i, m in enumerate(messages)}
    ordered = sorted(
        messages,
        key=lambda m: (ascii_casemap(base_subject(m.subject or "")), _sent_time(m), seq[m.uid]),
    )
    threads_ = []
    last = None
    for m in ordered:
        subj = ascii_casemap(base_subject(m.subject or ""))
        if threads_ and subj == last:
            # The first message of a subject is the parent of all the others.
            threads_[-1][1].append(m)
        else:
            threads_.append((m, []))
            last = subj
    threads_.sort(key=lambda t: (_sent_time(t[0]), seq[t[0].uid]))
    return [(root.uid, [(c.uid, []) for c in kids]) for root, kids in threads_]


def thread_references(messages):
    """RFC 5256 3 REFERENCES over messages in mailbox order."""
    by_id = {}
    containers = []
    for seq, m in enumerate(messages):
        # Step 1: containers by Message-ID (i;octet); a missing or duplicate Message-ID
        # gets a unique one.
        mid = m.row.get("message_id") or ""
        c = by_id.get(mid) if mid else None
        if c is not None and c.msg is None:
            c.msg, c.seq = m, seq  # a dummy made for an earlier reference
        else:
            c = _Container(m, seq)
            if mid and mid not in by_id:
                by_id[mid] = c
            containers.append(c)
        refs = [r for r in json.loads(m.row.get("refs") or "[]") if r]
        if not refs:
            # The first In-Reply-To id stands in for an absent References.
            refs = [r for r in json.loads(m.row.get("in_reply_to") or "[]") if r][:1]
        # Step 1.A: link the references, left to right, as parent and child.
        prev = None
        for ref in refs:
            rc = by_id.get(ref)
            if rc is None:
                rc = by_id[ref] = _Container()
                containers.append(rc)
            if prev is not None and rc.parent is None and rc is not prev:
                if not rc.is_ancestor_of(prev):  # no loops
                    prev.link(rc)
            prev = rc
        # Step 1.B: the last reference is the parent of this message.
        c.unlink()
        if prev is not None and prev is not c and not c.is_ancestor_of(prev):
            prev.link(c)
    # Step 2: the root set.
    root = _Container()
    for c in containers:
        if c.parent is None and (c.msg is not None or c.children):
            root.children.append(c)
            c.parent = root
    # Step 4: prune dummies, children before parents.
    for c in _postorder(root):
        kept = []
        for child in c.children:
            if child.msg is not None:
                kept.append(child)
            elif not child.children:
                continue
            elif c is root and len(child.children) > 1:
                kept.append(child)  # not promoted to the root: stays a dummy
            else:
                for g in child.children:
                    g.parent = c
                kept.extend(child.children)
        c.children = kept
    # Step 5: sort the root set by sent date; a dummy by its first child.
    for c in root.children:
        if c.msg is None:
            c.children.sort(key=_date_key)
    root.children.sort(key=_date_key)

    # Step 6: gather threads with the same base subject.
    def thread_subject(c):
        m = c.msg if c.msg is not None else c.children[0].msg
        subject = (m.subject or "") if m is not None else ""
        return ascii_casemap(base_subject(subject)), is_reply_or_forward(subject)

    table = {}
    for c in root.children:
        subj, refwd = thread_subject(c)
        if not subj:
            continue
        cur = table.get(subj)
        if cur is None:
            table[subj] = c
        elif cur.msg is not None and (c.msg is None or (thread_subject(cur)[1] and not refwd)):
            table[subj] = c
    for c in list(root.children):
        if c.parent is not root:
            continue
        subj, refwd = thread_subject(c)
        if not subj:
            continue
        t = table.get(subj)
        if t is None or t is c:
            continue
        if t.msg is None and c.msg is None:
            # Both dummies: the children of both become siblings.
            root.children.remove(c)
            for g in c.children:
                t.link(g)
            c.children = []
        elif t.msg is None:
            c.unlink()
            t.link(c)
        elif refwd and not thread_subject(t)[1]:
            c.unlink()
            t.link(c)
        else:
            # A new dummy with both as children replaces the table's message.
            d = _Container()
            i = root.children.index(t)
            root.children[i] = d
            d.parent = root
            t.parent = None
            c.unlink()
            d.link(t)
            d.link(c)
            table[subj] = d
    # Step 7: sort every set of siblings by sent date, youngest sets first.
    for c in _postorder(root):
        c.children.sort(key=_date_key)
    return _structure(root.children)


def thread(account, mailbox_id, uids, algorithm, key, *, searchres=None, now=None, read_file=None,
           progress=None):
    """Deferred[list]: RFC 5256 THREAD with "REFERENCES" or "ORDEREDSUBJECT" over the
    matching messages. Threads are (uid, [children]) tuples; uid None is a dummy parent
    (only at the top level, with two or more children). See ``format_thread``."""
    algorithm = algorithm.upper()
    if algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
        return defer.fail(SearchError(f"unknown thread algorithm {algorithm!r}"))

    async def run():
        _, messages = await _search(
            account, mailbox_id, list(uids), key, searchres, now, read_file, want_rows=True,
            progress=progress,
        )
        messages.sort(key=lambda m: m.uid)
        fn = thread_references if algorithm == "REFERENCES" else thread_ordered_subject
        return await threads.deferToThread(fn, messages)

    return defer.Deferred.fromCoroutine(run())


def format_thread(structure, number=None):
    """RFC 5256 4 thread-data: "(1 2)(3 (4)(5))". ``number``: dict or function from UID
    to the number to send (sequence number for THREAD, UID for UID THREAD); None sends
    UIDs."""
    if number is None:
        num = str
    elif callable(number):
        num = lambda uid: str(number(uid))  # noqa: E731
    else:
        num = lambda uid: str(number[uid])  # noqa: E731
    out = []
    # Work stack of strings to emit and nodes to expand, without recursion: chains of
    # replies can be longer than Python's recursion limit.
    for top in structure:
        stack = [")", ("members", top), "("]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            _, (uid, children) = item
            if uid is None:
                if len(children) == 1:
                    stack.append(("members", children[0]))
                    continue
                # A dummy parent: its children as a thread-nested list.
                for child in reversed(children):
                    stack += [")", ("members", child), "("]
                continue
            out.append(num(uid))
            if len(children) == 1:
                stack += [("members", children[0]), " "]
            elif children:
                for child in reversed(children):
                    stack += [")", ("members", child), "("]
                stack.append(" ")
    return "".join(out)


__all__ = [
    "SORT_KEYS", "SearchError", "ascii_casemap", "format_thread",
    "is_reply_or_forward", "search", "sort", "sort_messages", "thread",
    "thread_ordered_subject", "thread_references",
]
