"""Bayesian content filter: per-account word counts in SQLite, and classification.

The algorithm is mox's (``junk/filter.go``), see also
https://en.wikipedia.org/wiki/Naive_Bayes_spam_filtering:

- Training counts, per word, the trained ham and spam messages it occurred in, and the
  number of ham and spam messages trained. Untraining undoes it; counts never go below
  zero, and words whose counts are both zero are deleted.
- A word's spam probability is ``s / (s + h)``, with ``s`` its spam count divided by the
  number of spam messages and ``h`` likewise for ham: so an account with much more ham
  than spam is not biased towards ham.
- It is kept between ``max_power`` and ``1 - max_power``; a rare word (seen in at most
  ``rare_words`` messages) is pulled towards 0.5 by a tenth of the distance per count it
  lacks; words within ``ignore_words`` of 0.5 are ignored.
- The ``top_words`` most spammy (above 0.5) and most hammy (below 0.5) words are combined
  with Bayes' rule in log space (no underflow): ``p = 1 / (1 + e^eta)`` with
  ``eta = sum(ln(1 - p_i) - ln(p_i))``.

Words a filter has never seen do not count. Train and classify with the same n-gram
settings (``Params.onegrams/twograms/threegrams``): the database stores words, not the
settings they were made with.

Every method blocks (SQLite, fsync on commit). A ``Filter`` has one connection: call it
from one thread at a time (the caller runs it in a thread of its own, e.g.
``threads.deferToThread`` or a ``moxtw.db.Worker``); a lock guards against overlapping
calls but gives no concurrency. Several ``Filter`` objects, also in other processes, may
open the same database: SQLite serialises their writes, and every classification reads
the current message totals.
"""

import math
import threading
from dataclasses import dataclass, field

from moxtw.junk import schema
from moxtw.junk.words import message_words

# Words per "IN (...)" lookup: below SQLite's limit on host parameters.
LOOKUP_CHUNK = 500
# Never take the log of 0 or 1 (max_power 0 allows word probabilities of 0 and 1).
_EPSILON = 1e-9
# Fewer ham messages trained than this and a classification is not significant (mox).
SIGNIFICANT_HAMS = 50


@dataclass(frozen=True)
class Params:
    """Filter parameters, named like mox's junk.Params; defaults as mox's quickstart."""

    threshold: float = 0.95
    onegrams: bool = True
    twograms: bool = True
    threegrams: bool = False
    max_power: float = 0.01
    top_words: int = 10
    ignore_words: float = 0.1
    rare_words: int = 2

    @classmethod
    def from_config(cls, cfg):
        """Params from a JunkFilterConfig (or any object with its attribute names);
        defaults for None."""
        if cfg is None:
            return cls()
        return cls(
            threshold=float(cfg.Threshold),
            onegrams=bool(cfg.Onegrams),
            twograms=bool(cfg.Twograms),
            threegrams=bool(cfg.Threegrams),
            max_power=float(cfg.MaxPower),
            top_words=int(cfg.TopWords),
            ignore_words=float(cfg.IgnoreWords),
            rare_words=int(cfg.RareWords),
        )

    def message_words(self, data):
        """The words of a message's bytes with these n-gram settings."""
        return message_words(data, onegrams=self.onegrams, twograms=self.twograms,
                             threegrams=self.threegrams)


@dataclass
class Classification:
    """Result of ``Filter.classify``.

    ``top`` holds the (word, word probability) pairs that were combined, most decisive
    first. ``significant`` is false while fewer than ``SIGNIFICANT_HAMS`` ham messages
    were trained (mox: too little signal to reject on).
    """

    probability: float
    junk: bool
    top: list = field(default_factory=list)
    ham_messages: int = 0
    spam_messages: int = 0
    significant: bool = False
    known_words: int = 0


class FilterError(Exception):
    """The filter is not open, or its database cannot be used."""


class Filter:
    """A word database at ``path`` (created by ``open``) with classification ``params``."""

    def __init__(self, path, params=None):
        self.path = path
        self.params = params or Params()
        self._conn = None
        self._lock = threading.Lock()

    # Opening.

    def open(self):
        """Create or open the database (WAL, synchronous=FULL) and bring its schema up to
        date. Returns self."""
        with self._lock:
            if self._conn is None:
                conn = schema.connect(self.path)
                conn.row_factory = None  # plain tuples: classification reads many rows
                try:
                    schema.upgrade(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
        return self

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _db(self):
        if self._conn is None:
            raise FilterError("junk filter is not open")
        return self._conn

    # Reading.

    def totals(self):
        """(ham messages, spam messages) trained."""
        with self._lock:
            return self._totals(self._db())

    @staticmethod
    def _totals(conn):
        row = conn.execute("SELECT ham, spam FROM totals WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def word_counts(self, words):
        """{word: (ham, spam)} for the given words that are in the database: one indexed
        lookup per word, in chunks of ``LOOKUP_CHUNK``."""
        with self._lock:
            return self._lookup(self._db(), words)

    @staticmethod
    def _lookup(conn, words):
        words = list(words)
        out = {}
        for i in range(0, len(words), LOOKUP_CHUNK):
            chunk = words[i:i + LOOKUP_CHUNK]
            q = "SELECT word, ham, spam FROM word WHERE word IN (%s)" % ",".join("?" * len(chunk))
            for w, ham, spam in conn.execute(q, chunk):
                out[w] = (ham, spam)
        return out

    def count_words(self):
        """Number of distinct words in the database."""
        with self._lock:
            return self._db().execute("SELECT count(*) FROM word").fetchone()[0]

    def classify(self, words):
        """Classify a message by its words (``Params.message_words``): a Classification."""
        p = self.params
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN")  # one snapshot for the totals and the words
            try:
                hams, spams = self._totals(conn)
                counts = self._lookup(conn, set(words))
            finally:
                conn.execute("COMMIT")
        return classify_counts(counts, hams, spams, p)

    def classify_message(self, data):
        """Classify a message's bytes."""
        return self.classify(self.params.message_words(data))

    def top_words(self, n=10, min_count=None):
        """([(word, probability, ham, spam)] most spammy first, [...] most hammy first),
        of words seen in more than ``min_count`` messages (default: rare_words)."""
        if min_count is None:
            min_count = self.params.rare_words
        with self._lock:
            conn = self._db()
            hams, spams = self._totals(conn)
            # Word probability as in word_probability, before clamping; ties by count.
            prob = "((spam * 1.0 / ?) / ((spam * 1.0 / ?) + (ham * 1.0 / ?)))"
            args = (max(spams, 1), max(spams, 1), max(hams, 1))
            out = []
            for order in ("DESC", "ASC"):
                q = (f"SELECT word, {prob} AS p, ham, spam FROM word WHERE ham + spam > ? "
                     f"ORDER BY p {order}, ham + spam DESC, word LIMIT ?")
                out.append([tuple(r) for r in conn.execute(q, (*args, min_count, n))])
        return out[0], out[1]

    # Writing.

    def train(self, words, junk):
        """Add one message's words as ham (junk false) or spam (junk true)."""
        self.train_many([(words, junk)])

    def untrain(self, words, junk):
        """Undo ``train(words, junk)``: counts go down, never below zero."""
        self._change([(words, junk)], -1)

    def train_many(self, messages):
        """Train an iterable of (words, junk) in one transaction."""
        self._change(messages, 1)

    def untrain_many(self, messages):
        """Untrain an iterable of (words, junk) in one transaction."""
        self._change(messages, -1)

    def _change(self, messages, delta):
        # Sum up in memory first: one statement per distinct word, whatever the number of
        # messages.
        counts = {}
        nham = nspam = 0
        for words, junk in messages:
            if junk:
                nspam += 1
            else:
                nham += 1
            for w in set(words):
                c = counts.get(w)
                if c is None:
                    c = counts[w] = [0, 0]
                c[1 if junk else 0] += 1
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if delta > 0:
                    conn.executemany(
                        "INSERT INTO word (word, ham, spam) VALUES (?, ?, ?) ON CONFLICT (word) "
                        "DO UPDATE SET ham = ham + excluded.ham, spam = spam + excluded.spam",
                        ((w, h, s) for w, (h, s) in counts.items()))
                    conn.execute("UPDATE totals SET ham = ham + ?, spam = spam + ? WHERE id = 1",
                                 (nham, nspam))
                else:
                    conn.executemany(
                        "UPDATE word SET ham = max(ham - ?, 0), spam = max(spam - ?, 0) WHERE word = ?",
                        ((h, s, w) for w, (h, s) in counts.items()))
                    conn.executemany("DELETE FROM word WHERE word = ? AND ham = 0 AND spam = 0",
                                     ((w,) for w in counts))
                    conn.execute("UPDATE totals SET ham = max(ham - ?, 0), spam = max(spam - ?, 0) "
                                 "WHERE id = 1", (nham, nspam))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def reset(self):
        """Remove all words and message counts."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM word")
                conn.execute("UPDATE totals SET ham = 0, spam = 0 WHERE id = 1")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def word_probability(ham, spam, hams, spams, params):
    """A word's spam probability after max_power and rare_words, or None without data."""
    ws = spam / spams if spams > 0 else 0.0
    wh = ham / hams if hams > 0 else 0.0
    if ws + wh == 0:
        return None
    r = ws / (ws + wh)
    r = min(max(r, params.max_power), 1 - params.max_power)
    n = ham + spam
    if n <= params.rare_words:
        # Rare words weigh less: pulled towards 0.5 (mox junk/filter.go).
        r += (1 + params.rare_words - n) * (0.5 - r) / 10
    return r


def classify_counts(counts, hams, spams, params):
    """Classification from {word: (ham, spam)} and the trained message totals."""
    spammy = []
    hammy = []
    max_power, rare, ignore = params.max_power, params.rare_words, params.ignore_words
    spams_f = float(spams) if spams > 0 else math.inf  # a count over inf is 0
    hams_f = float(hams) if hams > 0 else math.inf
    for w, (ham, spam) in counts.items():
        # word_probability, inlined: this loop runs for every known word of a message.
        ws = spam / spams_f
        wh = ham / hams_f
        if ws + wh == 0:
            continue
        r = ws / (ws + wh)
        if r < max_power:
            r = max_power
        elif r > 1 - max_power:
            r = 1 - max_power
        if ham + spam <= rare:
            r += (1 + rare - ham - spam) * (0.5 - r) / 10
        if abs(0.5 - r) < ignore:
            continue
        if r > 0.5:
            spammy.append((w, r))
        elif r < 0.5:
            hammy.append((w, r))
    # Most decisive first; at equal probability the longer word (an n-gram) first, then
    # by word so the result does not depend on set order.
    spammy.sort(key=lambda x: (-x[1], -len(x[0]), x[0]))
    hammy.sort(key=lambda x: (x[1], -len(x[0]), x[0]))
    used = spammy[:params.top_words] + hammy[:params.top_words]
    eta = 0.0
    for _, r in used:
        r = min(max(r, _EPSILON), 1 - _EPSILON)
        eta += math.log(1 - r) - math.log(r)
    # p = 1 / (1 + e^eta), written so that e^x cannot overflow.
    if eta >= 0:
        e = math.exp(-eta)
        prob = e / (1 + e)
    else:
        prob = 1 / (1 + math.exp(eta))
    used.sort(key=lambda x: (-abs(x[1] - 0.5), -len(x[0]), x[0]))
    return Classification(
        probability=prob,
        junk=prob >= params.threshold,
        top=used,
        ham_messages=hams,
        spam_messages=spams,
        significant=hams >= SIGNIFICANT_HAMS,
        known_words=len(counts),
    )
