"""Line-ending repair for stored messages.

RFC 5322 2.1 and RFC 5321 2.3.8: lines in a message end in CRLF. Messages that
arrive through imports, sendmail or broken clients may use bare LF or lone CR;
they are stored with CRLF so that IMAP sizes and byte offsets are correct.
"""

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


def fix_line_endings(data):
    """Return data with every bare LF and lone CR turned into CRLF.

    Data that already uses CRLF only is returned unchanged (the same object).
    """
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") and crlf == data.count(b"\r"):
        return data
    return _LINE_END.sub(b"\r\n", data)
