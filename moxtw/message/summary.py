"""What the store records about a message at delivery, in one call.

``summary`` parses a message once and returns the facts the index keeps:
identifiers and references for threading (RFC 5322 3.6.4, RFC 5256 2.1 base
subject), date, decoded subject and addresses, List-Id (RFC 2919), the cached
IMAP ENVELOPE (also rendered) and BODYSTRUCTURE and part tree, an RFC 8970
preview, bounded text for the full-text index and, when asked, the texts IMAP
SEARCH compares (``moxtw.message.searchtext``). It never raises.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from moxtw.message import searchtext
from moxtw.message.address import Address, parse_address_list
from moxtw.message.dates import parse_date
from moxtw.message.header import parse_message_ids, strip_comments, to_str, unfold
from moxtw.message.htmltext import html_to_text
from moxtw.message.imap import format_envelope
from moxtw.message.part import Part, parse
from moxtw.message.subject import base_subject

# Full-text index text is cut at this many characters.
MAX_TEXT = 1024 * 1024
# At most this many bytes of one part's body are decoded for text and preview.
MAX_PART_BYTES = 4 * 1024 * 1024
# Messages with search text have no part above this size (see _summary).
assert searchtext.MAX_INDEXED_SIZE <= MAX_PART_BYTES
# RFC 8970 3.1: a preview is at most 256 characters.
PREVIEW_CHARS = 256
PREVIEW_SOURCE = 64 * 1024  # bytes of a part decoded for a preview when nothing else needs it whole
_SPACES = re.compile(r"\s+")


@dataclass
class Summary:
    message_id: str = ""
    in_reply_to: list = field(default_factory=list)
    references: list = field(default_factory=list)
    subject: str = ""
    base_subject: str = ""
    date: Optional[datetime] = None
    from_: list = field(default_factory=list)
    sender: list = field(default_factory=list)
    reply_to: list = field(default_factory=list)
    to: list = field(default_factory=list)
    cc: list = field(default_factory=list)
    bcc: list = field(default_factory=list)
    list_id: str = ""
    envelope: list = field(default_factory=list)
    bodystructure: list = field(default_factory=list)
    part_json: dict = field(default_factory=dict)
    preview: str = ""
    text: str = ""
    # FETCH ENVELOPE as sent (RFC 9051 7.5.2) when it is ASCII (then the same for every
    # session); None otherwise.
    envelope_imap: Optional[bytes] = None
    # With search_text=True, for messages up to searchtext.MAX_INDEXED_SIZE with at most
    # searchtext.MAX_INDEXED_BODY characters of body text: the indexed header text and
    # body text of moxtw.message.searchtext (index_texts); else None.
    search_header: Optional[str] = None
    search_body: Optional[str] = None


def _is_attachment(part):
    return part.disposition == "attachment"


def _part_text(part, data, limit=MAX_PART_BYTES):
    view = Part()
    view.body_offset = part.body_offset
    view.end_offset = min(part.end_offset, part.body_offset + limit)
    if limit < MAX_PART_BYTES and view.end_offset < part.end_offset:
        # A cut part ends at a line end: no character, QP escape or base64 group split.
        nl = data.rfind(b"\n", view.body_offset, view.end_offset)
        if nl > view.body_offset:
            view.end_offset = nl + 1
        else:
            # One long line: at least no UTF-8 sequence is split.
            end = view.end_offset
            while end > view.body_offset and 0x80 <= data[end - 1] <= 0xBF:
                end -= 1
            if end > view.body_offset and data[end - 1] >= 0xC0:
                end -= 1
            view.end_offset = end
    view.content_transfer_encoding = part.content_transfer_encoding
    view.params = part.params
    text = view.text(data)
    if part.media_subtype == "html":
        text = html_to_text(text)
    return text


def _preview(root, data, text_of):
    # RFC 8970 3.1: derived from the first text part; prefer text/plain, fall
    # back to text/html, skipping attachments.
    for wanted in ("plain", "html"):
        for part in root.walk():
            if part.media_type == "text" and part.media_subtype == wanted and not part.parts \
                    and not _is_attachment(part):
                text = text_of(part)
                # Collapsing the start is enough when it gives more than a preview (the
                # rest cannot change the first PREVIEW_CHARS characters).
                head = _SPACES.sub(" ", text[:PREVIEW_CHARS * 16]).strip()
                if len(head) > PREVIEW_CHARS or len(text) <= PREVIEW_CHARS * 16:
                    return head[:PREVIEW_CHARS]
                return _SPACES.sub(" ", text).strip()[:PREVIEW_CHARS]
    return ""


def _index_text(root, data, head, text_of):
    out = [head]
    total = len(head)
    for part in root.walk():
        if total >= MAX_TEXT:
            break
        if part.media_type == "text" and not part.parts:
            text = text_of(part)
            out.append(text)
            total += len(text)
        elif part.message is not None:
            h = part.message
            for name in ("subject", "from", "to", "cc"):
                v = h.header(name)
                if v:
                    out.append(v)
                    total += len(v)
    return "\n".join(out)[:MAX_TEXT]


def first_message_id(value):
    ids = parse_message_ids(value)
    return ids[0] if ids else ""


def _list_id(value):
    if value is None:
        return ""
    s = strip_comments(to_str(unfold(value)))
    m = re.search(r"<([^<>]*)>", s)
    # RFC 2919 3: the list-id is in angle brackets after an optional phrase.
    return (m.group(1) if m else s).strip()


def summary(data, search_text=False, texts=True):
    """Parse a message and return its Summary; never raises.

    ``search_text``: also compute ``search_header`` and ``search_body``. ``texts``
    False: neither those nor ``text`` (the full-text index text), for a message whose
    texts are made later (``index_texts``)."""
    try:
        return _summary(data, search_text, texts)
    except Exception:
        # Delivery must not fail on any message; return what is safe.
        s = Summary()
        try:
            root = parse(data)
            s.part_json = root.to_json()
            s.bodystructure = root.bodystructure()
            s.envelope = root.envelope()
        except Exception:
            s.envelope = [None] * 10
            s.bodystructure = ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT",
                               len(data) if isinstance(data, bytes) else 0, 0, None, None, None, None]
        return s


def index_texts(data):
    """(text, search_header, search_body) of a message, as ``summary`` with
    ``search_text=True`` gives them; never raises (empty texts, None)."""
    try:
        root = parse(data)
        s = Summary()
        s.subject = (root.header("subject") or "").strip()
        s.from_ = parse_address_list(root.header_raw("from"))
        s.to = parse_address_list(root.header_raw("to"))
        s.cc = parse_address_list(root.header_raw("cc"))
        _texts(s, root, data, True, _text_cache(data))
        return s.text, s.search_header, s.search_body
    except Exception:
        return "", None, None


def _text_cache(data):
    texts = {}

    def text_of(part):
        # Each text part is decoded once, for the preview, the full-text and the search text.
        t = texts.get(id(part))
        if t is None:
            t = texts[id(part)] = _part_text(part, data)
        return t

    return text_of


def _texts(s, root, data, search_text, text_of):
    head = [s.subject]
    for addr in s.from_ + s.to + s.cc:
        head.append(("%s %s" % (addr.name, addr.address())).strip())
    s.text = _index_text(root, data, "\n".join(head), text_of)
    if search_text and searchtext.indexable(len(data)):
        # No part is cut at MAX_PART_BYTES here: _part_text decoded them whole.
        s.search_header, s.search_body = searchtext.texts_of(root, data, text_of)


def _summary(data, search_text, texts=True):
    root = parse(data)
    s = Summary()
    s.message_id = first_message_id(root.header_raw("message-id"))
    s.in_reply_to = parse_message_ids(root.header_raw("in-reply-to"))
    s.references = parse_message_ids(root.header_raw("references"))
    s.subject = (root.header("subject") or "").strip()
    s.base_subject = base_subject(s.subject)
    s.date = parse_date(root.header_raw("date"))
    s.from_ = parse_address_list(root.header_raw("from"))
    s.sender = parse_address_list(root.header_raw("sender"))
    s.reply_to = parse_address_list(root.header_raw("reply-to"))
    s.to = parse_address_list(root.header_raw("to"))
    s.cc = parse_address_list(root.header_raw("cc"))
    s.bcc = parse_address_list(root.header_raw("bcc"))
    s.list_id = _list_id(root.header_raw("list-id"))
    s.envelope = root.envelope()
    rendered = format_envelope(s.envelope)
    if rendered.isascii():
        s.envelope_imap = rendered
    s.bodystructure = root.bodystructure()
    s.part_json = root.to_json()
    text_of = _text_cache(data)
    if texts:
        s.preview = _preview(root, data, text_of)
        _texts(s, root, data, search_text, text_of)
    else:
        # Without the texts nothing else decodes the parts: the preview comes from the
        # start of its part only, so a large message is never decoded whole here.
        s.preview = _preview(root, data, lambda part: _part_text(part, data, PREVIEW_SOURCE))
    return s


__all__ = ["Address", "Summary", "summary", "index_texts", "html_to_text"]
