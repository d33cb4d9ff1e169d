"""Charset handling for message text: MIME charset names to Python codecs.

Maps the charset labels found in real mail (RFC 2045 ``charset`` parameters,
RFC 2047 encoded words, RFC 2231 extended parameters) to Python codecs and
decodes bytes tolerantly: decoding never raises. Labels follow common practice
(WHATWG Encoding): ``iso-8859-1`` and ``us-ascii`` text is decoded as
windows-1252, ``gb2312`` as gb18030, and so on.
"""

import codecs
import re

# Labels Python does not know, or knows as something narrower than what senders
# actually mean.
_ALIASES = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-sjis": "shift_jis",
    "sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "x-euc-jp": "euc_jp",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "unicode": "utf-16",
}

# Codecs Python has that are not charsets text in mail can be written in.
_REFUSED = {
    "undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode",
    "mbcs", "oem", "charmap", "escape", "palmos",
}

_cache = {}

# Lone surrogates: some codecs (UTF-7) decode to them, and they cannot be encoded as UTF-8
# again (SQLite, IMAP output), so decoding replaces them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lookup(charset):
    """Return the Python codec name for a MIME charset label, or None if unknown."""
    if not charset:
        return None
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    key = charset.strip().strip('"').lower()
    try:
        return _cache[key]
    except KeyError:
        pass
    name = _ALIASES.get(key, key)
    result = None
    if len(name) <= 64 and name.isascii():
        try:
            info = codecs.lookup(name)
        except (LookupError, ValueError, TypeError):
            info = None
        if (info is not None and getattr(info, "_is_text_encoding", True)
                and info.name.replace("-", "_") not in _REFUSED):
            result = info.name
    if len(_cache) < 1000:
        _cache[key] = result
    return result


def decode_8bit(data):
    """Decode bytes of unknown charset: UTF-8 if valid, else windows-1252/latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode(data, charset):
    """Decode bytes in the given MIME charset; never raises, never returns lone surrogates.

    Unknown or missing charsets, and text that is invalid in its declared
    charset, fall back to UTF-8 and then windows-1252/latin-1 (or replacement
    characters for the declared charset when UTF-8 does not fit either).
    """
    codec = lookup(charset)
    if codec is None or codec == "cp1252":
        # No charset, us-ascii or latin-1: mislabelled UTF-8 is common.
        return decode_8bit(data)
    try:
        return _no_surrogates(data.decode(codec), codec)
    except Exception:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return _no_surrogates(data.decode(codec, "replace"), codec)
    except Exception:
        return decode_8bit(data)


def _no_surrogates(text, codec):
    if codec != "utf-8" and _SURROGATE.search(text):
        return _SURROGATE.sub("\ufffd", text)
    return text
