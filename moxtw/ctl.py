"""The control socket (``data/ctl``): commands from the ``moxtw`` command line to a
running server.

A Unix socket, mode 0600 (only the server's user and root reach it). Each request is one
line of JSON, ``{"cmd": "queue.hold", "args": {...}}``; each answer one line of JSON,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. Commands that change
something answer only after the change is durable (the queue commits with fsync).

Queue commands take filters: ``ids`` (list), ``account``, ``sender`` and ``recipient``
(a full address or a domain), ``hold`` (bool), ``next_before``/``next_after`` (ISO time
or relative like "+1h", "-30m"). A changing command without any filter is refused, so a
typo cannot hold or drop the whole queue; ``all: true`` says it is meant.
"""

import base64
import json
import os
import re
import socket
from datetime import datetime, timedelta, timezone

from twisted.application import internet, service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from moxtw.clock import default_reactor
from moxtw.queue.model import EntryNotFound

log = Logger(namespace="moxtw.ctl")

CTL_FILE = "ctl"
MAX_REQUEST = 64 * 1024
MAX_DUMP = 64 * 1024 * 1024
FILTER_KEYS = ("ids", "account", "sender", "recipient", "hold", "next_before", "next_after")
_RELATIVE = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CtlError(Exception):
    """A request the server refused, or no server to ask."""


class NotRunning(CtlError):
    """No server listens on the control socket (no socket file, or nothing accepting):
    commands that can may work on the files instead. Other failures to connect (no
    permission) are plain CtlErrors: a server may well be running."""


def ctl_path(data_dir):
    return os.path.join(data_dir, CTL_FILE)


def parse_time(value, now):
    """An aware datetime from ISO 8601 text (UTC when without zone) or a duration
    relative to ``now`` ("+1h", "-30m", "90s", "2d")."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    text = str(value).strip()
    m = _RELATIVE.match(text)
    if m:
        delta = timedelta(seconds=float(m.group(2)) * _UNITS[m.group(3)])
        return now - delta if m.group(1) == "-" else now + delta
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CtlError(f"invalid time {value!r}: use ISO 8601 or a duration like +1h") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def entry_dict(e):
    return {
        "id": e.id,
        "base_id": e.base_id,
        "queued": e.queued.isoformat(),
        "account": e.sender_account,
        "sender": e.sender,
        "recipient": e.recipient,
        "attempts": e.attempts,
        "max_attempts": e.max_attempts,
        "last_attempt": e.last_attempt.isoformat() if e.last_attempt else None,
        "next_attempt": e.next_attempt.isoformat(),
        "last_error": e.last_error,
        "hold": e.hold,
        "size": e.size,
        "message_id": e.message_id,
        "subject": e.subject,
        "transport": e.transport,
        "is_dsn": e.is_dsn,
        "requiretls": e.require_tls,
        "futurerelease": e.futurerelease_request,
    }


class QueueCommands:
    """The queue commands, on a running server's queue and queue service."""

    def __init__(self, queue, queue_service, now=None):
        self.queue = queue
        self.queue_service = queue_service
        self._now = now or (lambda: datetime.now(timezone.utc))

    async def select(self, args, changing):
        filters = {k: args[k] for k in FILTER_KEYS if args.get(k) is not None}
        unknown = set(args) - set(FILTER_KEYS) - {"all", "when", "reason"}
        if unknown:
            raise CtlError("unknown arguments: " + ", ".join(sorted(unknown)))
        if changing and not filters and not args.get("all"):
            raise CtlError("no filter given: name entries (ids, account, sender, recipient, ...) "
                           "or pass all to mean every entry")
        ids = filters.pop("ids", None)
        now = self._now()
        for k in ("next_before", "next_after"):
            if k in filters:
                filters[k] = parse_time(filters[k], now)
        if "hold" in filters:
            filters["hold"] = bool(filters["hold"])
        entries = await self.queue.list(**filters)
        if ids is not None:
            wanted = {int(i) for i in ids}
            entries = [e for e in entries if e.id in wanted]
        return entries

    async def list(self, args):
        return [entry_dict(e) for e in await self.select(args, False)]

    async def hold(self, args):
        entries = await self.select(args, True)
        n = await self.queue.hold([e.id for e in entries])
        return {"count": n}

    async def unhold(self, args):
        entries = await self.select(args, True)
        n = await self.queue.unhold([e.id for e in entries])
        self._kick()
        return {"count": n}

    async def schedule(self, args):
        if "when" not in args:
            raise CtlError("schedule needs when: a time or a duration from now (+10m)")
        when = parse_time(args["when"], self._now())
        entries = await self.select(args, True)
        n = await self.queue.schedule([e.id for e in entries], when)
        self._kick()
        return {"count": n, "next_attempt": when.isoformat()}

    async def drop(self, args):
        entries = await self.select(args, True)
        n = await self.queue.drop([e.id for e in entries])
        return {"count": n}

    async def fail(self, args):
        entries = await self.select(args, True)
        reason = args.get("reason") or "delivery failed by the administrator"
        if self.queue_service is None:
            raise CtlError("queue service not running")
        failed = await self.queue_service.fail(entries, reason)
        return {"count": len(failed)}

    async def dump(self, args):
        try:
            entry = await self.queue.get(int(args.get("id", -1)))
        except EntryNotFound:
            raise CtlError(f"no queue entry {args.get('id')}") from None
        except (TypeError, ValueError):
            raise CtlError("dump needs a numeric id") from None

        def read():
            with open(self.queue.message_path(entry), "rb") as f:
                return entry.msg_prefix + f.read(MAX_DUMP)

        from twisted.internet import threads

        data = await threads.deferToThread(read)
        return {"entry": entry_dict(entry), "message": base64.b64encode(data).decode("ascii")}

    def _kick(self):
        if self.queue_service is not None and self.queue_service.running:
            self.queue_service.kick()


class CtlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def connectionMade(self):
        self._busy = None

    def lineReceived(self, line):
        if self._busy is not None:
            self._answer({"ok": False, "error": "one request at a time"})
            return
        self._busy = defer.Deferred.fromCoroutine(self._handle(line))
        self._busy.addBoth(self._done)

    def _done(self, _):
        self._busy = None

    def lineLengthExceeded(self, line):
        self._answer({"ok": False, "error": "request too long"})
        self.transport.loseConnection()

    async def _handle(self, line):
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise CtlError("request must be an object with cmd")
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise CtlError("args must be an object")
            handler = self.factory.handler(req["cmd"])
            log.info("ctl command {cmd}", cmd=req["cmd"])
            if getattr(handler, "streams", False):
                # Progress lines before the answer: {"progress": ...}.
                result = await handler(args, lambda obj: self._answer({"progress": obj}))
            else:
                result = await handler(args)
            answer = {"ok": True, "result": result}
        except (CtlError, ValueError, TypeError) as e:
            answer = {"ok": False, "error": str(e)}
        except Exception as e:
            log.failure("ctl command failed")
            answer = {"ok": False, "error": f"internal error: {e}"}
        self._answer(answer)

    def _answer(self, obj):
        self.sendLine(json.dumps(obj).encode("utf-8"))


def _packages():
    """The names log levels can be set for: moxtw's packages and modules."""
    import pkgutil

    import moxtw

    return {m.name for m in pkgutil.iter_modules(moxtw.__path__) if m.name != "test"} | {"twisted"}


class ServerCommands:
    """Commands about the server itself: ``config.reload`` (read domains.toml now, after
    the command line changed it), ``loglevels`` (get, or set with ``level`` and optional
    ``pkg``, or drop ``pkg``'s level with ``remove``; until the next start) and ``stop``."""

    def __init__(self, watcher, log_config, stop, reactor=None):
        self.watcher = watcher
        self.log_config = log_config  # the moxtw.log.LogConfig in effect
        self._stop = stop
        self._reactor = default_reactor(reactor)

    async def reload(self, args):
        changed = self.watcher.check()
        return {"reloaded": changed}

    async def loglevels(self, args):
        from moxtw import log as mlog

        level = args.get("level")
        if args.get("remove") is True and args.get("pkg") in self.log_config.packages:
            # The package's own level is dropped: it logs at the default (or a parent's) level.
            packages = {k: v for k, v in self.log_config.packages.items() if k != args["pkg"]}
            self.log_config = new = mlog.LogConfig(default=self.log_config.default, packages=packages)
            mlog.configure(new)
            log.info("log levels changed", default=new.default, packages=new.packages)
        elif level is not None:
            pkg = args.get("pkg") or ""
            if not isinstance(level, str) or not isinstance(pkg, str):
                raise CtlError("level and pkg must be strings")
            packages = dict(self.log_config.packages)
            if pkg and pkg.split(".")[0] not in _packages():
                raise CtlError(f"unknown package {pkg!r}, expected one of {', '.join(sorted(_packages()))}")
            if pkg:
                packages[pkg] = level
                new = mlog.LogConfig(default=self.log_config.default, packages=packages)
            else:
                new = mlog.LogConfig(default=level, packages=packages)
            self.log_config = new
            mlog.configure(new)
            log.info("log levels changed", default=new.default, packages=new.packages)
        return {"default": self.log_config.default, "packages": dict(self.log_config.packages)}

    async def stop(self, args):
        # Answered first; the server then stops like on SIGTERM.
        self._reactor.callLater(0.1, self._stop)
        return {"stopping": True}


class ImportCommands:
    """``import``: messages from a maildir or mbox at ``path`` into ``account``'s
    ``mailbox`` (moxtw.admin.mailimport), by the running server so sessions see them
    arrive; progress lines while it runs."""

    def __init__(self, store, accounts):
        self.store = store
        self._accounts = accounts  # () -> names of configured accounts
        self._running = set()

    async def run(self, args, send):
        from moxtw.admin import mailimport

        for key in ("kind", "account", "mailbox", "path"):
            if not isinstance(args.get(key), str) or not args[key]:
                raise CtlError(f"{key} is required")
        if args["account"] not in self._accounts():
            raise CtlError(f"no account {args['account']!r}")
        path = os.path.realpath(args["path"])  # as the import's source id: one run per real source
        if not os.access(path, os.R_OK):
            raise CtlError(f"the server (uid {os.getuid()}) cannot read {path}: make it readable, or "
                           "import with the server stopped")
        if path in self._running:
            raise CtlError(f"an import of {path} is running already")
        from twisted.internet import threads

        try:
            # The source is looked at (a directory walk) in a thread, as it is read later.
            sources, result = await threads.deferToThread(mailimport.open_source, args["kind"], path)
        except mailimport.ImportError_ as e:
            raise CtlError(str(e)) from None
        self._running.add(path)
        try:
            acc = await self.store.open_account(args["account"])
            await mailimport.run(acc, sources, mailimport.source_id(path), args["mailbox"],
                                 top_level=args.get("top_level") is True,
                                 progress=lambda r: send(r.as_dict()), result=result)
        except Exception as e:
            raise CtlError(f"import stopped after {result.imported} messages: {e}") from None
        finally:
            self._running.discard(path)
        return result.as_dict()

    run.streams = True


class BackupCommands:
    """``backup``: a consistent copy of config and data to ``dest`` (moxtw.admin.backup),
    checked like verifydata afterwards."""

    def __init__(self, config_dir, data_dir, store, reactor=None):
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.store = store
        self._reactor = default_reactor(reactor)
        self._running = False

    async def run(self, args):
        from twisted.internet import threads

        from moxtw.admin import backup

        dest = args.get("dest")
        if not isinstance(dest, str) or not os.path.isabs(dest):
            raise CtlError("dest must be an absolute path")
        if self._running:
            raise CtlError("a backup is running already")
        self._running = True
        resumes = {}
        try:
            # Every account is opened and its file removals paused before copying starts.
            for name in self.store.account_names():
                acc = await self.store.open_account(name)
                resumes[name] = acc.pause_removals()
            try:
                counts = await threads.deferToThreadPool(
                    self._reactor, self._reactor.getThreadPool(), backup.run_and_verify,
                    self.config_dir, self.data_dir, dest, lambda name: resumes.get(name))
            except backup.BackupError as e:
                raise CtlError(str(e)) from None
            except OSError as e:
                raise CtlError(f"backup failed: {e}") from None
        finally:
            self._running = False
            for resume in resumes.values():
                resume()  # idempotent: most already ran after their account's copy
        return counts


class JunkCommands:
    """``junk.retrain``: empty an account's Bayesian filter and train it again from the
    account's $junk/$notjunk messages, in the running server (beside its trainer)."""

    def __init__(self, store, accounts, trainer):
        self.store = store
        self.accounts = accounts  # () -> {name: account config}
        self.trainer = trainer  # the server's moxtw.junk.train.Trainer (runs in turn with it)

    async def retrain(self, args):
        name = args.get("account")
        conf = self.accounts().get(name) if isinstance(name, str) else None
        if conf is None:
            raise CtlError(f"no account {name!r}")
        if conf.JunkFilter is None:
            raise CtlError(f"account {name} has no JunkFilter configured")
        return {"trained": await self.trainer.retrain(name, conf.JunkFilter)}


class CtlFactory(protocol.Factory):
    protocol = CtlProtocol

    def __init__(self, commands, server=None, importer=None, backup=None, junk=None):
        self.commands = commands
        self.server = server
        self.importer = importer
        self.backup = backup
        self.junk = junk

    def handler(self, cmd):
        group, _, name = cmd.partition(".")
        if group == "queue" and name in ("list", "hold", "unhold", "schedule", "drop", "fail", "dump"):
            return getattr(self.commands, name)
        if self.server is not None:
            if cmd == "config.reload":
                return self.server.reload
            if cmd in ("loglevels", "stop"):
                return getattr(self.server, cmd)
        if cmd == "import" and self.importer is not None:
            return self.importer.run
        if cmd == "backup" and self.backup is not None:
            return self.backup.run
        if cmd == "junk.retrain" and self.junk is not None:
            return self.junk.retrain
        if cmd == "ping":
            return _pong
        raise CtlError(f"unknown command {cmd!r}")


async def _pong(args):
    return "pong"


class CtlService(internet.StreamServerEndpointService):
    """Listens on ``data/ctl`` (0600), replacing a stale socket file from an earlier run."""

    def __init__(self, data_dir, commands, reactor=None, server=None, importer=None, backup=None, junk=None):
        reactor = default_reactor(reactor)
        self.path = ctl_path(data_dir)
        self.reactor = reactor
        super().__init__(None, CtlFactory(commands, server, importer, backup, junk))

    def privilegedStartService(self):
        # Bound in startService instead: after twistd switched to the unprivileged user,
        # so the socket (0600) belongs to the user that runs the moxtw commands.
        pass

    def startService(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        # The short name must stay valid while listening: the port unlinks it at stop.
        self._short = _short_path(self.path)
        path = self._short.__enter__()
        self.endpoint = endpoints.UNIXServerEndpoint(self.reactor, path, mode=0o600, wantPID=False)
        internet.StreamServerEndpointService.privilegedStartService(self)
        service.Service.startService(self)

    def stopService(self):
        d = super().stopService()

        def unlink(result):
            try:
                os.unlink(self.path)
            except OSError:
                pass
            if getattr(self, "_short", None) is not None:
                self._short.__exit__(None, None, None)
            return result

        return defer.maybeDeferred(lambda: d).addBoth(unlink)


class _short_path:
    """A name for ``path`` that fits a Unix socket address (108 bytes on Linux): the
    path itself, or /proc/self/fd/N/<name> through an open descriptor of its directory
    (deep test and data directories exceed the limit)."""

    LIMIT = 100

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if len(os.fsencode(self.path)) < self.LIMIT:
            return self.path
        self.fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{os.path.basename(self.path)}"

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def request(data_dir, cmd, timeout=120.0, on_progress=None, **args):
    """Send one command to the server of ``data_dir`` and return its result (blocking,
    for the command line). CtlError when no server listens or it refused.
    ``on_progress(obj)`` gets the progress lines of a streaming command."""
    path = ctl_path(data_dir)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            with _short_path(path) as short:
                s.connect(short)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"cannot reach the server at {path} ({e.strerror}): is it running?") from None
        except OSError as e:
            raise CtlError(f"cannot use the control socket {path} ({e.strerror or e}): run this command as the "
                           "server's user or root") from None
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode("utf-8") + b"\n")
        buf = b""
        while True:
            while b"\n" not in buf:
                try:
                    chunk = s.recv(1 << 20)
                except TimeoutError:
                    raise CtlError(f"no answer from the server within {timeout:.0f} seconds; it may still be "
                                   "working on the request (see its log)") from None
                if not chunk:
                    raise CtlError("server closed the connection without answering")
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            answer = json.loads(line)
            if "progress" in answer and "ok" not in answer:
                if on_progress is not None:
                    on_progress(answer["progress"])
                continue
            break
    finally:
        s.close()
    if not answer.get("ok"):
        raise CtlError(answer.get("error", "refused"))
    return answer["result"]
