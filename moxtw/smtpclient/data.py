"""Message data for SMTP DATA (RFC 5321 4.1.1.4, 4.5.2): dot-stuffing, CRLF line
endings and the terminating CRLF.CRLF, produced in chunks so a large message is never
copied as a whole.
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["CHUNK_SIZE", "has_bare_cr", "dot_stuffed_chunks"]

CHUNK_SIZE = 64 * 1024


def has_bare_cr(data: bytes) -> bool:
    """Whether data has a CR not followed by LF. Such messages are refused: a bare CR
    next to a dot is what SMTP smuggling builds on. (Counted without copying.)"""
    return data.count(b"\r") != data.count(b"\r\n")


def dot_stuffed_chunks(data: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The DATA stream for data: each line starting with "." gets another "." (RFC 5321
    4.5.2), bare LF line endings become CRLF, a missing final CRLF is added, and the
    stream ends with ".\\r\\n" (RFC 5321 4.1.1.4). Chunks end at line boundaries when a
    line fits in chunk_size, so the stuffing never has to look across chunks."""
    n = len(data)
    pos = 0
    at_line_start = True
    while pos < n:
        end = min(pos + chunk_size, n)
        if end < n:
            nl = data.rfind(b"\n", pos, end)
            if nl >= 0:
                end = nl + 1
            elif data[end - 1:end] == b"\r":
                end += 1  # keep a CRLF in one chunk
        chunk = data[pos:end]
        if b"\n" in chunk and chunk.count(b"\n") != chunk.count(b"\r\n"):
            # Bare LF: make every line ending CRLF (RFC 5321 2.3.8).
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        chunk = chunk.replace(b"\n.", b"\n..")
        if at_line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        at_line_start = chunk.endswith(b"\n")
        pos = end
        yield chunk
    # RFC 5321 4.1.1.4: the data ends with CRLF "." CRLF.
    yield b".\r\n" if at_line_start else b"\r\n.\r\n"
