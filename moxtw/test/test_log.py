"""Tests for moxtw.log: logfmt rendering, levels, per-package filtering."""

import io
import re

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from moxtw import log as mlog


def _logger(namespace, observer):
    return Logger(namespace=namespace, observer=observer)


class RenderTests(SynchronousTestCase):
    def setUp(self):
        self.out = io.StringIO()
        self.obs = mlog.make_observer(self.out, mlog.LogConfig(default="tracedata"))

    def lines(self):
        return self.out.getvalue().splitlines()

    def test_basic_line(self):
        """time, level, pkg, msg come first, then cid, then fields in order."""
        log = _logger("moxtw.smtpserver", self.obs)
        log.info("delivered message {msgid}", msgid="<a@b>", size=123, cid="1a2b")
        [line] = self.lines()
        self.assertRegex(
            line,
            r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info pkg=smtpserver "
            r'msg="delivered message <a@b>" cid=1a2b msgid=<a@b> size=123$',
        )

    def test_time(self):
        event = {
            "log_time": 1795294800.1234,
            "log_level": LogLevel.warn,
            "log_namespace": "moxtw.queue",
            "log_format": "x",
        }
        self.assertEqual(
            mlog.format_event(event),
            "time=2026-11-21T21:00:00.123Z level=warn pkg=queue msg=x\n",
        )

    def test_quoting(self):
        self.assertEqual(mlog.logfmt_value("plain"), "plain")
        self.assertEqual(mlog.logfmt_value(""), '""')
        self.assertEqual(mlog.logfmt_value(None), '""')
        self.assertEqual(mlog.logfmt_value(True), "true")
        self.assertEqual(mlog.logfmt_value(3), "3")
        self.assertEqual(mlog.logfmt_value("a b"), '"a b"')
        self.assertEqual(mlog.logfmt_value("a=b"), '"a=b"')
        self.assertEqual(mlog.logfmt_value('say "hi"'), '"say \\"hi\\""')
        self.assertEqual(mlog.logfmt_value("l1\r\nl2"), '"l1\\r\\nl2"')
        self.assertEqual(mlog.logfmt_value("a\\b"), "a\\b")
        self.assertEqual(mlog.logfmt_value("a\\ b"), '"a\\\\ b"')
        self.assertEqual(mlog.logfmt_value("\x00\x7f"), '"\\x00\\x7f"')
        self.assertEqual(mlog.logfmt_value("\u2028"), '"\\u2028"')
        self.assertEqual(mlog.logfmt_value("héllo"), "héllo")
        self.assertEqual(mlog.logfmt_value(b"MAIL FROM:<a@b>\r\n"), '"MAIL FROM:<a@b>\\r\\n"')
        self.assertEqual(mlog.logfmt_value(b"\xff"), "\\xff")

    def test_reserved_and_odd_keys(self):
        log = _logger("moxtw.x", self.obs)
        log.info("m", **{"msg": "shadow", "a b": 1, "err": "e"})
        [line] = self.lines()
        self.assertIn(" msg=m msg_=shadow a_b=1 err_=e", line)

    def test_log_fields_skipped(self):
        log = _logger("moxtw.x", self.obs)
        log.info("hello {log_source}")
        [line] = self.lines()
        self.assertNotIn("log_", line.split("msg=", 1)[1].split('"', 2)[2])

    def test_non_moxtw_namespace(self):
        log = _logger("twisted.internet.tcp.Port", self.obs)
        log.info("listening")
        self.assertIn(" pkg=twisted.internet.tcp.Port ", self.lines()[0])

    def test_failure(self):
        """A failure adds err= and an indented traceback on following lines."""
        log = _logger("moxtw.store", self.obs)
        try:
            raise ValueError("bad thing")
        except ValueError:
            log.failure("delivering {id}", id=5, cid="c1")
        text = self.out.getvalue()
        lines = text.splitlines()
        self.assertRegex(
            lines[0],
            r' level=critical pkg=store msg="delivering 5" cid=c1 id=5 '
            r'err="ValueError: bad thing"$',
        )
        self.assertTrue(len(lines) > 2)
        for tl in lines[1:]:
            self.assertTrue(tl.startswith("    "), tl)
        self.assertIn("ValueError: bad thing", lines[-1])
        self.assertTrue(text.endswith("\n"))

    def test_failure_error_level(self):
        log = _logger("moxtw.store", self.obs)
        log.failure("oops", Failure(KeyError("k")), level=LogLevel.error)
        self.assertIn(" level=error ", self.lines()[0])
        self.assertIn(" err=\"KeyError: 'k'\"", self.lines()[0])

    def test_legacy_event(self):
        """Old-style events lose their legacy keys."""
        from twisted.logger._legacy import publishToNewObserver
        from twisted.python.log import textFromEventDict

        publishToNewObserver(
            self.obs,
            {"message": ("legacy hello",), "isError": 0, "system": "-", "time": 1.0},
            textFromEventDict,
        )
        [line] = self.lines()
        self.assertEqual(
            line, 'time=1970-01-01T00:00:01.000Z level=info pkg=log_legacy msg="legacy hello"'
        )

    def test_bad_str(self):
        class Bad:
            def __str__(self):
                raise RuntimeError("no")

        log = _logger("moxtw.x", self.obs)
        log.info("m", v=Bad())
        self.assertIn("v=\"<unrenderable Bad: RuntimeError('no')>\"", self.lines()[0])


class LevelTests(SynchronousTestCase):
    def test_order(self):
        self.assertEqual(
            mlog.LEVELS,
            ("tracedata", "traceauth", "trace", "debug", "info", "warn", "error", "critical"),
        )

    def test_trace_helpers(self):
        out = io.StringIO()
        obs = mlog.make_observer(out, mlog.LogConfig(default="tracedata"))
        log = _logger("moxtw.imapserver", obs)
        mlog.trace(log, "C: {line}", line="a1 NOOP", cid=7)
        mlog.traceauth(log, "C: {line}", line="a2 LOGIN u p", cid=7)
        mlog.tracedata(log, "C: {line}", line="Subject: x", cid=7)
        log.debug("dbg")
        levels = [re.search(r" level=(\S+) ", ln).group(1) for ln in out.getvalue().splitlines()]
        self.assertEqual(levels, ["trace", "traceauth", "tracedata", "debug"])
        self.assertNotIn("mox_trace", out.getvalue())

    def _emit_all(self, obs, namespace):
        log = _logger(namespace, obs)
        mlog.tracedata(log, "tracedata")
        mlog.traceauth(log, "traceauth")
        mlog.trace(log, "trace")
        log.debug("debug")
        log.info("info")
        log.warn("warn")
        log.error("error")
        log.critical("critical")

    def _msgs(self, out):
        r = [re.search(r" msg=(\S+)", ln).group(1) for ln in out.getvalue().splitlines()]
        out.seek(0)
        out.truncate()
        return r

    def test_default_filters(self):
        out = io.StringIO()
        obs = mlog.make_observer(out, mlog.LogConfig())
        self._emit_all(obs, "moxtw.smtpserver")
        self.assertEqual(self._msgs(out), ["info", "warn", "error", "critical"])

    def test_each_threshold(self):
        out = io.StringIO()
        for i, level in enumerate(mlog.LEVELS):
            obs = mlog.make_observer(out, mlog.LogConfig(default=level))
            self._emit_all(obs, "moxtw.x")
            self.assertEqual(self._msgs(out), list(mlog.LEVELS[i:]))

    def test_per_package_longest_prefix(self):
        config = mlog.LogConfig(
            default="error",
            packages={"smtpserver": "trace", "smtpserver.delivery": "warn", "twisted": "critical"},
        )
        self.assertEqual(config.level_for("smtpserver"), "trace")
        self.assertEqual(config.level_for("smtpserver.conn"), "trace")
        self.assertEqual(config.level_for("smtpserver.delivery"), "warn")
        self.assertEqual(config.level_for("smtpserver.delivery.local"), "warn")
        self.assertEqual(config.level_for("smtpserverx"), "error")
        self.assertEqual(config.level_for("twisted.internet"), "critical")
        self.assertEqual(config.level_for("imapserver"), "error")

        out = io.StringIO()
        obs = mlog.make_observer(out, config)
        self._emit_all(obs, "moxtw.smtpserver")
        self.assertEqual(self._msgs(out), ["trace", "debug", "info", "warn", "error", "critical"])
        self._emit_all(obs, "moxtw.smtpserver.delivery")
        self.assertEqual(self._msgs(out), ["warn", "error", "critical"])
        self._emit_all(obs, "moxtw.imapserver")
        self.assertEqual(self._msgs(out), ["error", "critical"])
        self._emit_all(obs, "twisted.web")
        self.assertEqual(self._msgs(out), ["critical"])

    def test_set_levels(self):
        out = io.StringIO()
        obs = mlog.make_observer(out, mlog.LogConfig(default="info"))
        log = _logger("moxtw.queue", obs)
        log.debug("one")
        mlog.set_levels(mlog.LogConfig(default="info", packages={"queue": "debug"}), obs)
        log.debug("two")
        self.assertTrue(obs.enabled("queue", "debug"))
        mlog.set_levels(mlog.LogConfig(default="warn"), obs)
        log.debug("three")
        log.info("four")
        self.assertEqual(self._msgs(out), ["two"])

    def test_bad_level(self):
        self.assertRaises(ValueError, mlog.LogConfig, default="loud")
        self.assertRaises(ValueError, mlog.LogConfig, packages={"x": "chatty"})
        self.assertEqual(mlog.LogConfig(default="WARNING").default, "warn")


class StartLoggingTests(SynchronousTestCase):
    def test_start_logging(self):
        """start_logging hands our observer to the global log beginner."""
        calls = []

        class FakeBeginner:
            def beginLoggingTo(self, observers, redirectStandardIO=True):
                calls.append((observers, redirectStandardIO))

        self.patch(mlog, "globalLogBeginner", FakeBeginner())
        self.patch(mlog, "_installed", None)
        out = io.StringIO()
        obs = mlog.start_logging(out, mlog.LogConfig(default="warn"))
        self.assertEqual(calls, [([obs], False)])
        mlog.set_levels(mlog.LogConfig(default="debug"))
        self.assertTrue(obs.enabled("anything", "debug"))


class FastPathTests(SynchronousTestCase):
    """The shortcuts taken for speed give what Twisted's own formatting gives."""

    def test_messages_as_formatEvent(self):
        from twisted.logger import formatEvent

        class Odd:
            def __format__(self, spec):
                raise ValueError("no")

        cases = [
            ("delivered {account}/{mailbox} uid {uid}", dict(account="a", mailbox="Inbox", uid=3)),
            ("{a!r} {b:>5} {c[0]} {d.real}", dict(a="x", b="y", c=[1], d=2)),
            ("missing {nothere}", {}),
            ("call {f()}", dict(f=lambda: "called")),
            ("odd {o}", dict(o=Odd())),
            ("braces {{literal}} {x}", dict(x=1)),
        ]
        for fmt, fields in cases:
            event = dict(fields, log_format=fmt, log_level=LogLevel.info, log_namespace="moxtw.x")
            self.assertEqual(mlog._format_msg(event), formatEvent(dict(event)), fmt)

    def test_time_each_millisecond(self):
        import datetime

        for t in (1795294800.0, 1795294800.0009, 1795294800.999, 1795294801.5, 0.25, 1795294799.9999):
            d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            want = d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
            self.assertEqual(mlog._format_time(t), want, t)

    def test_bare_values(self):
        for v in ("plain", "a=b", 'q"', "é", "tab\there", "", "~!#<>", "a b"):
            slow = not v or any(c in ' "=' or not c.isprintable() for c in v)
            self.assertEqual(mlog._needs_quote(v), slow, v)

    def test_trace_not_made_below_level(self):
        """Under our installed observer a trace call at info level makes no event at
        all; after the level changes at runtime it does."""
        from twisted.logger import globalLogPublisher

        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        old = mlog._installed
        self.addCleanup(setattr, mlog, "_installed", old)
        mlog._installed = mlog.make_observer(io.StringIO(), mlog.LogConfig(default="info"))
        log = Logger(namespace="moxtw.smtpserver")
        mlog.trace(log, "C: {line}", line="NOOP")
        self.assertEqual([e for e in seen if e.get("line") == "NOOP"], [])
        mlog.set_levels(mlog.LogConfig(default="info", packages={"smtpserver": "trace"}))
        mlog.trace(log, "C: {line}", line="NOOP")
        mlog.traceauth(log, "C: {line}", line="NOOP")  # still below traceauth
        self.assertEqual(len([e for e in seen if e.get("line") == "NOOP"]), 1)
        # A logger with its own observer always gets its events.
        own = []
        mlog.trace(Logger(namespace="moxtw.imapserver", observer=own.append), "C: {line}", line="x")
        self.assertEqual(len(own), 1)
