"""Reading the message after DATA: dot-unstuffing, end detection, smuggling protection.

RFC 5321 4.1.1.4 and 4.5.2: the message ends with CRLF "." CRLF, and a line starting
with "." had one extra "." added by the client. Only that exact sequence ends the data.
Sequences another server might take as the end (LF "." LF, CRLF "." LF, LF "." CRLF) and
bare carriage returns are refused: a message relayed through a server that ends DATA
differently could otherwise smuggle a second message in ("SMTP smuggling"). After such
a sequence the reader keeps reading up to the real end, so nothing in the message is ever
taken as a command.

Bare LF line endings elsewhere are accepted in normal mode (the store repairs them to
CRLF) and refused in pedantic mode. Both readers note NUL bytes (``has_nul``), which
pedantic mode refuses except in BINARYMIME messages. Data is streamed into a spool file,
never held whole in memory, whatever the line lengths.
"""

import errno
import tempfile

from moxtw.smtp import codes as c

SPOOL_IN_MEMORY = 128 * 1024  # larger messages go to the spool directory as they arrive


class _Spool:
    """The message being received: memory up to SPOOL_IN_MEMORY, then a file in the
    spool directory. A failing write (disk full, a spool directory we may not write)
    is kept in ``error`` and the rest of the message is read and dropped, so the
    transaction ends with a reply instead of a dropped connection."""

    def __init__(self, spool_dir):
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=spool_dir)
        self.error = None

    def write(self, chunk):
        if self.error is not None:
            return
        try:
            self.file.write(chunk)
        except OSError as e:
            self.error = e
            self.close()

    def close(self):
        """Release the spool file. Closing flushes what is buffered, which fails again
        on a full disk; the file is closed all the same (io closes the descriptor when
        the flush fails), so that error is only kept."""
        try:
            self.file.close()
        except OSError as e:
            if self.error is None:
                self.error = e

    def read_all(self):
        """The whole message (blocking when on disk). OSError when the rest of the
        data cannot be written out or read back; the file is closed then."""
        try:
            self.file.seek(0)
            return self.file.read()
        except OSError as e:
            self.error = self.error or e
            self.close()
            raise


def spool_error_reply(error):
    """(code, enhanced, text) for a spool write error: RFC 3463 4.3.1 for a full disk,
    4.3.0 otherwise; both temporary, the sender tries again."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return c.C452_STORAGE_FULL, c.SE_MAIL_SYSTEM_STORAGE_FULL1, "mail system full, try again later"
    return c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0, "error storing message, try again later"
PARTIAL_FLUSH = 64 * 1024


class DataReader:
    """Feed bytes after the 354 reply; ``feed`` returns the bytes after the end marker
    once the end is seen, else None."""

    def __init__(self, max_size, pedantic=False, spool_dir=None):
        self.max_size = max_size
        self.pedantic = pedantic
        self._spool = _Spool(spool_dir)
        self.file = self._spool.file
        self.size = 0
        self.too_large = False
        self.smuggling = None  # description of the first offending sequence
        self.bare_lf = False
        self.has_8bit = False
        self.has_nul = False
        self._buf = b""
        self._line_start = True
        self._prev_crlf = True  # the DATA command line ended with CRLF

    def feed(self, data):
        buf = self._buf + data if self._buf else data
        pos = 0
        n = len(buf)
        while pos < n:
            last = buf.rfind(b"\n", pos)
            if last < 0:
                rest = buf[pos:]
                if len(rest) >= PARTIAL_FLUSH:
                    # A long partial line: write all but a possible trailing CR.
                    self._partial(rest[:-1])
                    rest = rest[-1:]
                self._buf = rest
                return None
            if not (self._line_start and buf[pos] == 0x2E):
                # The complete lines up to the next one starting with "." (dot-stuffed,
                # or the end marker) need no unstuffing and cannot end the data: taken
                # as one piece when every CR in them is part of a CRLF, else line by line.
                dot = buf.find(b"\n.", pos, last)
                end = dot + 1 if dot >= 0 else last + 1
                if not self._bulk(buf, pos, end):
                    while pos < end:
                        nl = buf.find(b"\n", pos, end)
                        self._line(buf[pos:nl + 1])  # never the end: no line here starts with "."
                        pos = nl + 1
                pos = end
                continue
            nl = buf.find(b"\n", pos)
            line = buf[pos:nl + 1]
            pos = nl + 1
            if self._line(line):
                self._buf = b""
                return buf[pos:]
        self._buf = b""
        return None

    def _bulk(self, buf, start, end):
        """Take buf[start:end], complete lines none of which starts with ".", in one
        write; False (nothing taken) when a CR stands alone or, in pedantic mode, a
        line ends with a bare LF: the caller then goes line by line for the verdict."""
        region = buf[start:end]
        crlf = region.count(b"\r\n")
        if region.count(b"\r") != crlf:
            return False
        if region.count(b"\n") != crlf:
            if self.pedantic:
                return False
            self.bare_lf = True
        self._write(region)
        self._line_start = True
        self._prev_crlf = region.endswith(b"\r\n")
        return True

    def _partial(self, chunk):
        if b"\r" in chunk:
            self._flag("bare carriage return")
        if self._line_start and chunk.startswith(b"."):
            chunk = chunk[1:]
        self._line_start = False
        self._write(chunk)

    def _line(self, line):
        crlf = line.endswith(b"\r\n")
        body = line[:-2] if crlf else line[:-1]
        if b"\r" in body:
            self._flag("bare carriage return")
        if self._line_start and body == b".":
            if crlf and self._prev_crlf:
                return True
            self._flag("end of data marker with bare newline")
            self._prev_crlf = crlf
            return False
        if not crlf:
            self.bare_lf = True
            if self.pedantic:
                self._flag("bare newline (pedantic mode)")
        if self._line_start and body.startswith(b"."):
            line = line[1:]  # RFC 5321 4.5.2: dot-unstuffing
        self._write(line)
        self._line_start = True
        self._prev_crlf = crlf
        return False

    def _flag(self, what):
        if self.smuggling is None:
            self.smuggling = what

    def _write(self, chunk):
        self.size += len(chunk)
        if self.size > self.max_size:
            self.too_large = True
            return
        if not self.has_8bit and not chunk.isascii():
            self.has_8bit = True
        if not self.has_nul and b"\0" in chunk:
            self.has_nul = True
        if self.smuggling is None:
            self._spool.write(chunk)

    @property
    def spool_error(self):
        return self._spool.error

    def read_all(self):
        """The message bytes (blocking if spooled to disk: call off the reactor)."""
        return self._spool.read_all()

    def close(self):
        self._spool.close()


class ChunkReader:
    """BDAT (RFC 3030): raw chunks of a known size, no dot-stuffing, appended together."""

    def __init__(self, max_size, spool_dir=None):
        self.max_size = max_size
        self._spool = _Spool(spool_dir)
        self.file = self._spool.file
        self.size = 0
        self.too_large = False
        self.has_8bit = False
        self.has_nul = False
        self.remaining = 0

    def start_chunk(self, size):
        self.remaining = size

    def feed(self, data):
        """Take what belongs to the current chunk; returns the rest, or None when the
        chunk is not complete yet."""
        take = data[: self.remaining]
        self.remaining -= len(take)
        self.size += len(take)
        if self.size > self.max_size:
            self.too_large = True
        elif take:
            if not self.has_8bit and not take.isascii():
                self.has_8bit = True
            if not self.has_nul and b"\0" in take:
                self.has_nul = True
            self._spool.write(take)
        if self.remaining:
            return None
        return data[len(take):]

    @property
    def spool_error(self):
        return self._spool.error

    def read_all(self):
        return self._spool.read_all()

    def close(self):
        self._spool.close()
