"""The text IMAP SEARCH compares: a message's header fields and body text, lower-cased.

RFC 9051 6.4.4 (and RFC 3501 6.4.4): BODY matches messages whose body contains a string,
TEXT those whose header or body contains it, HEADER those with a named field containing it
(any message with the field for an empty string); all as case-insensitive substrings.
moxtw decodes before comparing:

- header fields: (name, value) with the name lower-cased and the value unfolded (RFC 5322
  2.2.3) and RFC 2047 decoded, then lower-cased; TEXT compares each field as
  ``name: value``.
- body: the decoded text parts (transfer encoding undone, charset decoded; HTML as text
  with runs of white space collapsed), and the subject and addresses of attached
  messages, joined with newlines and lower-cased.

This module is the one definition of those texts. The store keeps them in its index at
delivery (``moxtw.store``, the ``message_search`` table) and IMAP SEARCH computes them from
the message file for messages that are not indexed (``moxtw.imapserver.search``), so both
give the same answers. Changing what is produced here needs a store schema step that
rebuilds the indexed texts.

The indexed header text is one string: for each field ``"\\n" + name + ": " + value``, with
backslash, newline and NUL in names and values escaped (``\\\\``, ``\\n``, ``\\0``), so a
newline always starts a field; the indexed body text has backslash and NUL escaped. (SQLite's
trigram tokenizer stops at a NUL: unescaped, the text after one would not be indexed.)
Escaping maps every character on its own, so a needle that occurs in a text, escaped the
same way, occurs in the indexed text (what a substring index needs), and
``"\\n" + name + ":"`` occurs exactly when the field is present.
"""

import re

from moxtw.message.header import decode_words, unfold
from moxtw.message.htmltext import html_to_text
from moxtw.message.part import parse

# Messages larger than this get no indexed search text; SEARCH reads their files.
MAX_INDEXED_SIZE = 4 * 1024 * 1024
# Nor do messages whose body text (text parts, decoded) is longer than this many
# characters: a trigram index costs about 12 ms of CPU per MB of repetitive text and
# 400 ms per MB of random-looking text (a log, a dump, base64 sent as text/plain), in the
# store's writer thread every delivery waits for. Long texts are rare and SEARCH reads
# them from their files, with the same answers.
MAX_INDEXED_BODY = 256 * 1024


def indexable(size):
    """Whether a message of ``size`` bytes gets indexed search text."""
    return size <= MAX_INDEXED_SIZE


def index_texts(data):
    """(indexed header text, indexed body text) of a message's bytes; (None, None) when
    its body text is longer than MAX_INDEXED_BODY."""
    return texts_of(parse(data), data)


def texts_of(root, data, text_of=None):
    """index_texts of a parsed message (``text_of``: as for body_text)."""
    body = body_text(root, data, text_of)
    if len(body) > MAX_INDEXED_BODY:
        return None, None
    return header_text(header_fields(root)), escape_body(body)


_SPACES = re.compile(r"[ \t\r\n]+")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def fold(text):
    """Case folding for substring search: ``str.casefold`` (full Unicode case folding,
    not context dependent like ``lower``: a final sigma folds like any other), applied
    alike to the stored texts and to search strings."""
    return text.casefold()


def header_fields(root):
    """[(name, value)] of the message's header fields in order, both lower-cased, the
    value unfolded and RFC 2047 decoded."""
    return [(name.lower(), fold(decode_words(unfold(value)))) for name, value in root.headers]


def part_text(part, data):
    """The text of a text part as BODY sees it: decoded; HTML as text, white space collapsed."""
    text = part.text(data)
    if part.media_subtype == "html":
        # White space in HTML is insignificant, and removed tags leave runs of it.
        text = _SPACES.sub(" ", html_to_text(text))
    return text


def body_text(root, data, text_of=None):
    """The lower-cased body text of a parsed message (see the module docstring).

    ``text_of(part)``, when given, returns the decoded text of a text part with HTML
    already converted (``html_to_text``, not collapsed), so a caller that decoded the
    parts already need not do it again."""
    pieces = []
    for part in root.walk():
        if part.media_type == "text" and not part.parts:
            if text_of is None:
                pieces.append(part_text(part, data))
            else:
                text = text_of(part)
                if part.media_subtype == "html":
                    text = _SPACES.sub(" ", text)
                pieces.append(text)
        elif part.message is not None:
            for name in ("subject", "from", "to", "cc"):
                v = part.message.header(name)
                if v:
                    pieces.append(v)
    return fold("\n".join(pieces))


def escape(s):
    """Backslash, newline and NUL escaped, as in the indexed header text."""
    s = escape_body(s)
    if "\n" in s:
        s = s.replace("\n", "\\n")
    return s


def escape_body(s):
    """Backslash and NUL escaped, as in the indexed body text."""
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\x00" in s:
        s = s.replace("\x00", "\\0")
    return s


_UNESCAPED = {"n": "\n", "0": "\x00"}


def unescape(s):
    """The text of an indexed header or body text (or a part of one)."""
    if "\\" not in s:
        return s
    return _ESCAPED.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), s)


def header_text(fields):
    """The indexed form of ``header_fields``."""
    return "".join("\n" + escape(name) + ": " + escape(value) for name, value in fields)


def parse_header_text(text):
    """``header_fields`` back from ``header_text``."""
    out = []
    for line in text.split("\n")[1:]:
        name, _, value = line.partition(": ")  # names never hold ":"
        out.append((unescape(name), unescape(value)))
    return out


def field_marker(name):
    """What occurs in the indexed header text exactly when field ``name`` is present."""
    return "\n" + escape(name.lower()) + ":"


__all__ = [
    "MAX_INDEXED_BODY", "MAX_INDEXED_SIZE", "body_text", "escape", "escape_body", "field_marker", "header_fields",
    "header_text", "index_texts", "indexable", "parse_header_text", "part_text", "texts_of", "unescape",
]
