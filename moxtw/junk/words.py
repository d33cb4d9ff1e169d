"""The words of a message, as the Bayesian filter (``moxtw.junk.bayes``) sees them.

Modelled on mox's ``junk/parse.go``: words come from the decoded text parts (transfer
encoding undone, RFC 2045 6.7/6.8; charset decoded with replacement, so bad bytes never
fail), HTML parts converted to text without scripts and styles, and a few header fields
(From, To, Cc, Bcc, Reply-To, Subject, Sender, Return-Path; RFC 2047 decoded), whose
words are prefixed with the lower-cased field name: ``subject:invoice``.

A word is a run of letters and digits (an apostrophe between letters stays inside:
``don't``), lower-cased. Left out, as in mox: words of fewer than 3 characters (ASCII),
words of digits only, numbers in disguise (4 digits in a row, or hex with 3), and random
looking ASCII strings (6 consonants or digits 2-9 in a row: ``2fvu9stm9yxhnlu``). Words
longer than ``MAX_WORD`` characters (base64 runs, hashes) are dropped. With two- and
three-grams, consecutive words of one text are also joined with a space.

Everything is bounded, so hostile messages cost little: at most ``max_size`` characters of
text are read in all, at most ``MAX_TEXT_PARTS`` text parts, at most ``MAX_WORDS``
distinct words are returned, and non-text parts (images, application/*) are skipped
without decoding. Nesting is bounded by the MIME parser (``moxtw.message.MAX_DEPTH``).
``message_words`` never raises: on anything unexpected it returns the words read so far.
"""

import functools
import re

from moxtw.message import charset as _charset
from moxtw.message.encoding import decode_transfer
from moxtw.message.header import decode_words, unfold
from moxtw.message.htmltext import html_to_text
from moxtw.message.part import parse

# Characters of text (bodies and headers together) analysed per message.
MAX_SIZE = 1024 * 1024
# Distinct words (n-grams included) returned per message.
MAX_WORDS = 50000
# Text parts analysed per message.
MAX_TEXT_PARTS = 100
# Longer words are dropped: base64 runs, hashes, URLs glued together.
MAX_WORD = 48

# Header fields whose words count (mox junk/parse.go), and the shortest word kept there.
HEADER_FIELDS = ("from", "to", "cc", "bcc", "reply-to", "subject", "sender", "return-path")
_HEADER_MIN_WORD = 4

# Letters and digits ([^\W_]), with apostrophes between letters kept inside a word.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_ALL_DIGITS = re.compile(r"\d+")
_RANDOM = re.compile(r"[bcdfghjklmnpqrstvwxyz2-9]{6}")
_FOUR_DIGITS = re.compile(r"\d{4}")
_THREE_DIGITS = re.compile(r"\d{3}")
_HEX = re.compile(r"[0-9a-f]+")


@functools.lru_cache(maxsize=100_000)  # words repeat across messages; thread-safe, bounded
def _keep(w):
    """Whether a lower-cased word counts (see the module docstring)."""
    if len(w) > MAX_WORD:
        return False
    if w.isascii():
        if len(w) < 3 or _RANDOM.search(w):
            return False
        s = w[2:] if w.startswith("0x") else w
        if _FOUR_DIGITS.search(s) or (_HEX.fullmatch(s) and _THREE_DIGITS.search(s)):
            return False
    if _ALL_DIGITS.fullmatch(w):
        return False
    return True


class _Collector:
    """Adds words and n-grams to a set, within the budgets of one message."""

    def __init__(self, onegrams, twograms, threegrams, max_size):
        self.words = set()
        self.onegrams = onegrams
        self.twograms = twograms
        self.threegrams = threegrams
        self.budget = max_size

    def full(self):
        return self.budget <= 0 or len(self.words) >= MAX_WORDS

    def text(self, text, prefix="", min_len=0):
        """Tokenize one text (one part or header field); n-grams do not cross texts."""
        if self.full():
            return
        text = text[:self.budget]
        self.budget -= len(text)
        words = self.words
        one, two, three = self.onegrams, self.twograms, self.threegrams
        add = words.add if not prefix else (lambda w: len(w) >= min_len and words.add(prefix + w))
        prev = prev2 = None
        for w in _WORD.findall(text.lower()):
            if not _keep(w):
                continue
            if len(words) >= MAX_WORDS - 3:
                # Room for this word's n-grams no more: the cap is exact.
                return
            if three and prev2 is not None:
                add(prev2 + " " + prev + " " + w)
            if two and prev is not None:
                add(prev + " " + w)
            if one:
                add(w)
            prev2, prev = prev, w


def _strip_mbox_from(data):
    # An mbox "From " separator line is not a header field (field names have no
    # spaces, RFC 5322 3.6.8): messages saved from mbox files often start with one.
    if data.startswith(b"From "):
        nl = data.find(b"\n")
        return data[nl + 1:] if nl >= 0 else b""
    return data


def message_words(data, *, onegrams=True, twograms=False, threegrams=False, max_size=MAX_SIZE):
    """The set of words of a message's bytes (see the module docstring); never raises."""
    c = _Collector(onegrams, twograms, threegrams, max_size)
    try:
        _collect(bytes(data), c, max_size)
    except Exception:
        # Hostile input must not fail a delivery: what was read so far counts.
        pass
    return c.words


def _collect(data, c, max_size):
    data = _strip_mbox_from(data)
    root = parse(data)
    for name in HEADER_FIELDS:
        for value in root.header_values_raw(name)[:10]:
            c.text(decode_words(unfold(value[:4096])), name + ":", _HEADER_MIN_WORD)
    raw_limit = 4 * max_size  # base64 and quoted-printable are at most 4/3 and 3 times larger
    nparts = 0
    for part in root.walk():
        if c.full() or nparts >= MAX_TEXT_PARTS:
            break
        if part.parts or part.message is not None or part.media_type != "text":
            # Containers are walked into; images, application/* and the like are skipped.
            continue
        nparts += 1
        end = min(part.end_offset, part.body_offset + raw_limit)
        body = decode_transfer(data[part.body_offset:end], part.content_transfer_encoding)
        text = _charset.decode(body[:raw_limit], part.params.get("charset"))
        if part.media_subtype == "html":
            text = html_to_text(text)  # skips script, style, head and title
        c.text(text)
