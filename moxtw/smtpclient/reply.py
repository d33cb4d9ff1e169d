"""SMTP reply parsing for the client (RFC 5321 4.2, 4.2.1; RFC 3463; RFC 2034).

:class:`ReplyParser` takes bytes as they arrive and hands out complete, possibly
multi-line replies. It enforces limits: a reply line longer than :data:`MAX_LINE` bytes or
a reply of more than :data:`MAX_LINES` lines is a :class:`ReplyError`, as is anything that
is not a reply line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reply", "ReplyError", "ReplyParser", "MAX_LINE", "MAX_LINES", "parse_enhanced"]

MAX_LINE = 2048  # RFC 5321 4.5.3.1.5 says 512 incl. CRLF; real servers send longer lines
MAX_LINES = 100

# RFC 3463 2: class "." subject "." detail; subject and detail at most 3 digits.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyError(Exception):
    """The server sent something that is not a valid reply."""


@dataclass(frozen=True)
class Reply:
    """One complete reply: the code, the lines' texts (without code and separator)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def enhanced_and_text(self, announced: bool) -> tuple[str | None, str]:
        """(enhanced code or None, text with the enhanced code taken off each line).

        RFC 2034 3: with ENHANCEDSTATUSCODES every line starts with the code; its class
        must match the reply code's first digit."""
        if not announced:
            return None, self.text
        se = parse_enhanced(self.code, self.lines[0] if self.lines else "")
        if se is None:
            return None, self.text
        out = []
        for line in self.lines:
            m = _ENHANCED.match(line)
            if m is not None and m.group(0).strip() == se:
                line = line[m.end():]
            out.append(line)
        return se, "\n".join(out)


def parse_enhanced(code: int, line: str) -> str | None:
    """The enhanced status code at the start of line, if valid for code (RFC 3463 2)."""
    m = _ENHANCED.match(line)
    if m is None or int(m.group(1)) != code // 100:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


class ReplyParser:
    """Accumulates bytes; :meth:`feed` returns the replies completed by them."""

    def __init__(self) -> None:
        self._buf = b""
        self._code: int | None = None
        self._lines: list[str] = []

    def feed(self, data: bytes) -> list[Reply]:
        self._buf += data
        replies = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > MAX_LINE:
                    raise ReplyError(f"reply line longer than {MAX_LINE} bytes")
                return replies
            if i + 1 > MAX_LINE:
                raise ReplyError(f"reply line longer than {MAX_LINE} bytes")
            line, self._buf = self._buf[:i], self._buf[i + 1:]
            if line.endswith(b"\r"):
                line = line[:-1]
            # A bare LF ending is tolerated: robustness for the client side.
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)

    def _line(self, line: bytes) -> Reply | None:
        # RFC 5321 4.2: Reply-code [ SP textstring ] CRLF, or Reply-code "-" text for all
        # but the last line of a multi-line reply (4.2.1).
        if len(line) < 3 or not line[:3].isdigit():
            raise ReplyError(f"malformed reply line {line[:60]!r}")
        code = int(line[:3])
        if not (200 <= code <= 599):
            raise ReplyError(f"reply code {code} out of range")
        sep = line[3:4]
        if sep not in (b"", b" ", b"-"):
            raise ReplyError(f"malformed reply line {line[:60]!r}")
        # RFC 5321 4.2.1: all lines of a multi-line reply carry the same code.
        if self._code is not None and code != self._code:
            raise ReplyError(f"reply code changed within multi-line reply ({self._code} then {code})")
        self._code = code
        # Servers may send UTF-8 (RFC 6531 3.7.4.1); anything else is shown replaced.
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(self._lines) > MAX_LINES:
            raise ReplyError(f"reply of more than {MAX_LINES} lines")
        if sep == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._code = None
        self._lines = []
        return reply

    @property
    def pending(self) -> bool:
        """Whether bytes or a partial reply are buffered."""
        return bool(self._buf) or bool(self._lines)
