"""Base subject extraction for threading and sorting (RFC 5256 2.1)."""

import re

_WS = re.compile(r"\s+")
# RFC 5256 5: subj-trailer = "(fwd)" / WSP
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
# subj-blob = "[" *BLOBCHAR "]" *WSP
_BLOB = r"\[[^\[\]]*\]\s*"
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
# subj-leader = (*subj-blob subj-refwd) / WSP
_LEADER = re.compile(r"^(?:(?:" + _BLOB + r")*(?:re|fwd?)\s*(?:" + _BLOB + r")?:|\s+)", re.IGNORECASE)
_LEADING_BLOB = re.compile(r"^" + _BLOB)


def base_subject(subject):
    """Return the RFC 5256 2.1 base subject of an already decoded subject.

    Case is kept; compare base subjects case-insensitively (RFC 5256 uses
    i;ascii-casemap for this).
    """
    if not subject:
        return ""
    # Step 1: tabs and continuations to space, runs of spaces to one.
    s = _WS.sub(" ", subject[:10000])
    while True:
        # Step 2: remove trailers.
        s = _TRAILER.sub("", s)
        # Steps 3-5: remove leaders and leading blobs while that leaves text.
        while True:
            before = s
            m = _LEADER.match(s)
            while m and m.end():
                s = s[m.end():]
                m = _LEADER.match(s)
            m = _LEADING_BLOB.match(s)
            if m and s[m.end():].strip():
                s = s[m.end():]
            if s == before:
                break
        # Step 6: "[fwd: ... ]" wrapper.
        if s[:5].lower() == "[fwd:" and s.endswith("]"):
            s = s[5:-1]
            continue
        break
    return s.strip()
