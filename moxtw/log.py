"""Logging: twisted.logger events rendered as logfmt lines, with per-package levels.

Code logs through ``twisted.logger.Logger(namespace="moxtw.<pkg>")`` with structured
fields::

    log = Logger(namespace="moxtw.smtpserver")
    log.info("delivered message", cid=cid, msgid=msgid)

and the observer made by :func:`make_observer` writes one logfmt line per event::

    time=2026-11-21T21:00:00.123Z level=info pkg=smtpserver msg="delivered message" cid=1a2b msgid=...

Rendering rules:

- ``pkg`` is the event's ``log_namespace`` with a leading ``moxtw.`` removed; events from
  Twisted itself keep their namespace (``twisted.internet.tcp.Port``), legacy
  ``twisted.python.log`` events have pkg ``log_legacy``.
- ``msg`` is the event formatted with :func:`twisted.logger.formatEvent`.
- The fields follow: ``cid`` first when present, then every other event key that does not
  start with ``log_`` (so both the format fields and extra keyword fields) in the order they
  were passed. Fields that collide with ``time``, ``level``, ``pkg`` or ``msg`` get a ``_``
  appended to their key. Values are written bare unless they are empty or contain a space,
  ``"``, ``=`` or a non-printable character; then they are double-quoted with ``\\``,
  ``"``, ``\\n``, ``\\r``, ``\\t`` and other non-printables escaped. Bytes are decoded as
  UTF-8 with backslash escapes for invalid bytes, booleans are ``true``/``false`` and None
  is an empty value.
- A failure (``log_failure``, from ``Logger.failure`` or an errback) adds an
  ``err="ExceptionType: message"`` field to the line, and the traceback follows on the
  next lines, each indented by four spaces. Line-oriented consumers can therefore treat
  any line starting with a space as a continuation.

Levels, from most to least verbose: ``tracedata`` (shows message data) < ``traceauth``
(shows credentials) < ``trace`` (protocol traffic) < ``debug`` < ``info`` < ``warn`` <
``error`` < ``critical``. Twisted has no levels below debug, so the trace levels are
debug-level events that carry a ``mox_trace`` field naming their trace level; emit them
with :func:`trace`, :func:`traceauth` and :func:`tracedata`. The field is not rendered; the
line's ``level=`` shows the trace level instead.

Which events are written is decided per package by a :class:`LogConfig`: the longest
configured package prefix matching the event's pkg (``smtpserver`` matches
``smtpserver`` and ``smtpserver.delivery``, not ``smtpserverx``) gives the minimum level,
otherwise the default. :func:`set_levels` replaces the levels at runtime, e.g. on a
config reload.
"""

from __future__ import annotations

import datetime
import re
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Mapping

from zope.interface import implementer

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    globalLogBeginner,
    globalLogPublisher,
)

__all__ = [
    "LEVELS",
    "LogConfig",
    "LogfmtObserver",
    "make_observer",
    "set_levels",
    "start_logging",
    "trace",
    "traceauth",
    "tracedata",
    "format_event",
    "logfmt_value",
]

# Level names in increasing severity; the index is the level's rank.
LEVELS: tuple[str, ...] = (
    "tracedata",
    "traceauth",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "critical",
)
_RANK = {name: i for i, name in enumerate(LEVELS)}
_TWISTED_LEVEL_NAMES = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warn",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}
# Accepted aliases in configuration.
_ALIASES = {"warning": "warn", "fatal": "critical"}

TRACE_FIELD = "mox_trace"
_RESERVED_KEYS = frozenset(("time", "level", "pkg", "msg"))
# Keys that old-style twisted.python.log events carry besides their log_* keys.
_LEGACY_KEYS = frozenset(
    ("message", "time", "system", "isError", "format", "why", "failure", "printed")
)


def _level_name(name: str) -> str:
    """Normalise and check a configured level name."""
    n = _ALIASES.get(name.lower(), name.lower())
    if n not in _RANK:
        raise ValueError(f"unknown log level {name!r}, expected one of {', '.join(LEVELS)}")
    return n


@dataclass
class LogConfig:
    """Minimum log level by default and per package (pkg names without ``moxtw.``)."""

    default: str = "info"
    packages: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.default = _level_name(self.default)
        self.packages = {pkg.strip("."): _level_name(lvl) for pkg, lvl in self.packages.items()}

    def level_for(self, pkg: str) -> str:
        """The minimum level for pkg: the longest matching package prefix wins."""
        best, best_len = self.default, -1
        for prefix, level in self.packages.items():
            if len(prefix) > best_len and (pkg == prefix or pkg.startswith(prefix + ".")):
                best, best_len = level, len(prefix)
        return best


# Trace helpers. They log at Twisted's debug level with a mox_trace field.


def _skipped(logger: Logger, level: str) -> bool:
    """Whether an event of ``level`` from ``logger`` would be dropped by our installed
    observer: then it is not made at all (a protocol trace line per command costs more
    to build than the command; under a server at info level nothing would be written).
    Without our observer (twistd's default, tests) or for a logger with an observer of
    its own, every event is made."""
    obs = _installed
    if obs is None or logger.observer is not globalLogPublisher:
        return False
    ns = logger.namespace
    return not obs.enabled(ns[6:] if ns.startswith("moxtw.") else ns, level)


def trace(logger: Logger, fmt: str, **kw: Any) -> None:
    """Log protocol traffic (commands, responses) at level ``trace``."""
    if not _skipped(logger, "trace"):
        logger.debug(fmt, **{TRACE_FIELD: "trace"}, **kw)


def traceauth(logger: Logger, fmt: str, **kw: Any) -> None:
    """Log traffic that contains credentials at level ``traceauth``."""
    if not _skipped(logger, "traceauth"):
        logger.debug(fmt, **{TRACE_FIELD: "traceauth"}, **kw)


def tracedata(logger: Logger, fmt: str, **kw: Any) -> None:
    """Log message data at level ``tracedata``."""
    if not _skipped(logger, "tracedata"):
        logger.debug(fmt, **{TRACE_FIELD: "tracedata"}, **kw)


# Rendering.


def event_level(event: Mapping[str, Any]) -> str:
    """The level name of an event, trace levels included."""
    t = event.get(TRACE_FIELD)
    if t in ("trace", "traceauth", "tracedata"):
        return t
    return _TWISTED_LEVEL_NAMES.get(event.get("log_level"), "info")


def event_pkg(event: Mapping[str, Any]) -> str:
    """The event's namespace without a leading ``moxtw.``."""
    ns = event.get("log_namespace") or "unknown"
    if ns.startswith("moxtw."):
        return ns[len("moxtw.") :]
    return ns


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


# Printable ASCII without space, '"' and '=': written bare (the common case, checked
# without a loop over the characters).
_BARE = re.compile(r"[!#-<>-~]+")


def _needs_quote(s: str) -> bool:
    if _BARE.fullmatch(s):
        return False
    if not s:
        return True
    for c in s:
        if c in ' "=' or not c.isprintable():
            return True
    return False


def _escape_char(c: str) -> str:
    e = _ESCAPES.get(c)
    if e is not None:
        return e
    if c.isprintable():
        return c
    o = ord(c)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def logfmt_value(value: Any) -> str:
    """Render a value for logfmt, quoting and escaping when needed."""
    if value is None:
        s = ""
    elif isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        s = bytes(value).decode("utf-8", "backslashreplace")
    else:
        try:
            s = str(value)
        except Exception as e:  # never let a bad __str__ lose the log line
            s = f"<unrenderable {type(value).__name__}: {e!r}>"
    if not _needs_quote(s):
        return s
    return '"' + "".join(_escape_char(c) for c in s) + '"'


def _logfmt_key(key: str) -> str:
    k = "".join(c if (c.isprintable() and c not in ' "=') else "_" for c in key)
    return k or "_"


_second = [None, ""]  # the last second formatted and its text (one strftime a second)


def _format_time(t: float | None) -> str:
    if t is None:
        return "-"
    sec = int(t // 1)
    cached = _second
    if cached[0] != sec:
        text = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        cached[:] = [sec, text]
    return f"{cached[1]}{int((t - sec) * 1000) % 1000:03d}Z"


def _format_msg(event: Mapping[str, Any]) -> str:
    """formatEvent's text; plain ``{field}`` formats (nearly all) by str.format_map,
    which gives the same text without Twisted's slower formatter."""
    fmt = event.get("log_format")
    if type(fmt) is str and "()" not in fmt and "log_flattened" not in event:
        try:
            return fmt.format_map(event)
        except Exception:
            pass
    return formatEvent(dict(event))


def format_event(event: Mapping[str, Any], level: str | None = None) -> str:
    """Render an event as a logfmt line (ending in a newline), plus an indented traceback
    on following lines if the event carries a failure."""
    if level is None:
        level = event_level(event)
    try:
        msg = _format_msg(event)
    except Exception as e:  # formatEvent already guards; be defensive anyway
        msg = f"unformattable event: {e!r}"
    parts = [
        "time=" + _format_time(event.get("log_time")),
        "level=" + level,
        "pkg=" + logfmt_value(event_pkg(event)),
        "msg=" + logfmt_value(msg),
    ]
    legacy = "isError" in event and "message" in event
    keys = [k for k in event if k != "cid"]
    if "cid" in event:
        keys.insert(0, "cid")
    for k in keys:
        if not isinstance(k, str) or k.startswith("log_") or k == TRACE_FIELD:
            continue
        if legacy and k in _LEGACY_KEYS:
            continue
        name = _logfmt_key(k)
        if name in _RESERVED_KEYS or name == "err":
            name += "_"
        parts.append(name + "=" + logfmt_value(event[k]))

    tb = ""
    failure = event.get("log_failure")
    if failure is not None:
        try:
            exc = failure.value
            parts.append("err=" + logfmt_value(f"{type(exc).__name__}: {exc}"))
            tb = failure.getTraceback()
        except Exception as e:
            parts.append("err=" + logfmt_value(f"unrenderable failure: {e!r}"))
    line = " ".join(parts) + "\n"
    if tb:
        line += "".join("    " + tl + "\n" for tl in tb.rstrip("\n").split("\n"))
    return line


@implementer(ILogObserver)
class LogfmtObserver:
    """Writes events at or above their package's configured level as logfmt lines."""

    def __init__(self, out: IO[str], config: LogConfig | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()  # events may come from threads (legacy log)
        self.set_levels(config or LogConfig())

    def set_levels(self, config: LogConfig) -> None:
        """Replace the levels; takes effect for the next event."""
        self._config = config
        self._cache: dict[str, int] = {}

    def _min_rank(self, pkg: str) -> int:
        r = self._cache.get(pkg)
        if r is None:
            r = _RANK[self._config.level_for(pkg)]
            if len(self._cache) < 4096:
                self._cache[pkg] = r
        return r

    def enabled(self, pkg: str, level: str) -> bool:
        """Whether an event of this pkg and level would be written."""
        return _RANK[level] >= self._min_rank(pkg)

    def __call__(self, event: dict[str, Any]) -> None:
        level = event_level(event)
        if _RANK[level] < self._min_rank(event_pkg(event)):
            return
        line = format_event(event, level)
        with self._lock:
            self._out.write(line)
            flush = getattr(self._out, "flush", None)
            if flush is not None:
                flush()


def make_observer(out_file: IO[str], config: LogConfig | None = None) -> LogfmtObserver:
    """A logfmt observer writing to the text file out_file, filtered by config."""
    return LogfmtObserver(out_file, config)


_installed: LogfmtObserver | None = None


def start_logging(out: IO[str], config: LogConfig | None = None) -> LogfmtObserver:
    """Make our observer the global one (for twistd and the CLI); returns it.

    Standard output and error are not redirected into the log."""
    global _installed
    obs = make_observer(out, config)
    globalLogBeginner.beginLoggingTo([obs], redirectStandardIO=False)
    _installed = obs
    return obs


def set_levels(config: LogConfig, observer: LogfmtObserver | None = None) -> None:
    """Change levels at runtime, of observer or else of the one :func:`start_logging`
    installed (a no-op if none was)."""
    obs = observer or _installed
    if obs is not None:
        obs.set_levels(config)


_wanted: LogConfig | None = None


def configure(config: LogConfig) -> None:
    """Set the levels from the configuration (LogLevel, PackageLogLevels).

    Applies to the observer installed by :func:`start_logging` or :func:`twistd_observer`,
    and to one created later: twistd builds the service tree before it starts logging."""
    global _wanted
    _wanted = config
    set_levels(config)


def twistd_observer() -> LogfmtObserver:
    """Observer factory for ``twistd --logger=moxtw.log.twistd_observer``: logfmt lines on
    standard output (journald or a terminal), with the configured levels."""
    import sys

    global _installed
    _installed = make_observer(sys.stdout, _wanted)
    return _installed
