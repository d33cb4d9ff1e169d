"""Message parsing: headers, MIME tree, IMAP envelope and bodystructure.

The parser works on the bytes of a stored message and records byte offsets
instead of copying parts, so IMAP can serve sections byte-exact from the file
and the part tree can be cached. It is tolerant: ``parse`` and ``summary``
never raise, whatever the input.

RFCs: 5322 (message format, incl. obsolete syntax), 2045/2046 (MIME),
2047 (encoded words), 2231 (parameter continuations and charsets),
2183 (Content-Disposition), 6532 (UTF-8 headers, message/global),
9051/3501 (ENVELOPE, BODYSTRUCTURE, section numbers), 5256 (base subject),
8970 (preview).

Modules: ``crlf`` (line endings), ``charset``, ``encoding`` (transfer
encodings), ``header`` (unfolding, 2047, 2231), ``address``, ``dates``,
``subject``, ``part`` (the tree), ``imap`` (ENVELOPE/BODYSTRUCTURE and their
IMAP rendering), ``htmltext`` (HTML to text), ``searchtext`` (what IMAP
SEARCH compares), ``summary`` (what delivery stores).
"""

from moxtw.message.address import Address, parse_address_list
from moxtw.message.charset import decode as decode_charset
from moxtw.message.crlf import fix_line_endings
from moxtw.message.dates import parse_date
from moxtw.message.header import decode_words, parse_message_ids, unfold
from moxtw.message.part import MAX_DEPTH, MAX_PARTS, Part, parse
from moxtw.message.subject import base_subject
from moxtw.message.summary import Summary, html_to_text, index_texts, summary

__all__ = [
    "Address", "MAX_DEPTH", "MAX_PARTS", "Part", "Summary", "base_subject",
    "decode_charset", "decode_words", "fix_line_endings", "html_to_text",
    "index_texts", "parse", "parse_address_list", "parse_date", "parse_message_ids", "summary",
    "unfold",
]
