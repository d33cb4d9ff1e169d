"""The admin pages (mox's ``/admin/``): log in with the admin password
(``AdminPasswordFile``, written by ``moxtw setadminpassword`` or the quickstart); see the
domains, the accounts with their addresses, and the queue; hold and release queued
messages.

Pages: ``GET /admin/`` (login form or overview), ``POST /admin/login``, ``/admin/logout``,
``/admin/queue/hold``, ``/admin/queue/unhold``. The JSON API under ``/admin/api/`` does
the same (listed at ``GET /admin/api/``).
"""

import json
import os

from klein import Klein
from twisted.internet import task, threads
from twisted.logger import Logger

from moxtw.sasl import credentials
from moxtw.web import base
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

# The login the failure limits count admin attempts under: no account can have it.
ADMIN_LOGIN = "\0admin web pages"
MAX_QUEUE_LISTED = 500

API = [
    ("POST", "/api/login", "log in: {password} -> {csrf}; sets the session cookie"),
    ("POST", "/api/logout", "end this session"),
    ("GET", "/api/overview", "-> {domains: [...], accounts: [{name, domain, addresses}], queue: {count}}"),
    ("GET", "/api/queue", "-> [{id, from, to, attempts, next_attempt, hold, last_error, size}]"),
    ("POST", "/api/queue/hold", "{ids: [id, ...]} -> {count}"),
    ("POST", "/api/queue/unhold", "{ids: [id, ...]} -> {count}: held messages are delivered"),
]


class AdminApp(base.AppBase):
    app = Klein()
    app_name = "admin"

    def __init__(self, config_path, password_file, limits, sessions, current, queue, queue_service=None,
                 clock=None, path="/admin/"):
        self.config_path = config_path
        self.password_file = password_file  # () -> AdminPasswordFile or None
        self.limits = limits
        self.sessions = base.Sessions(sessions, "admin", "moxtw_admin", path)
        self.current = current
        self.queue = queue
        self.queue_service = queue_service
        self.clock = clock
        self.path = path

    async def _session(self, request, required=True):
        session = await self.sessions.current(request)
        if session is not None and self._password_changed_after(session.created):
            # A new admin password (moxtw setadminpassword) ends the sessions before it.
            await self.sessions.store.remove(session.id)
            session = None
        if session is None and required:
            raise HTTPError(401, "not logged in")
        return session

    def _password_changed_after(self, when):
        name = self.password_file()
        try:
            return bool(name) and os.stat(self.config_path(name)).st_mtime > when
        except OSError:
            return True

    def _check_password(self, password):
        name = self.password_file()
        if not name:
            return None
        try:
            with open(self.config_path(name), "rb") as f:
                creds = credentials.Credentials.from_json(json.loads(f.read()))
        except (OSError, ValueError, KeyError, TypeError):
            log.error("admin password file {file} cannot be read", file=name)
            return None
        return credentials.verify_password(creds, password)

    async def _login(self, request, fields):
        ip = base.remote_ip(request)
        base.check_origin(request)
        password = fields.get("password", "")
        if not password or len(password) > 1024:
            raise HTTPError(400, "password required")
        return await base.one_login_at_a_time(ip, lambda: self._login_checked(request, ip, password))

    async def _login_checked(self, request, ip, password):
        why = self.limits.allowed_login(ip, ADMIN_LOGIN)
        if why is not None:
            raise HTTPError(429, why)
        ok = await threads.deferToThread(self._check_password, password)
        if ok is None:
            raise HTTPError(403, "no admin password set: run moxtw setadminpassword")
        if not ok:
            delay = self.limits.record(ip, ADMIN_LOGIN, False)
            if delay:
                await task.deferLater(self._reactor(), delay, lambda: None)
            raise HTTPError(401, "invalid password")
        self.limits.record(ip, ADMIN_LOGIN, True)
        token, session = await self.sessions.store.create("admin", "", ADMIN_LOGIN, ip,
                                                          base.header(request, "user-agent"))
        self.sessions.set_cookie(request, token)
        log.info("web admin login", ip=ip)
        return session

    async def _overview(self):
        static, dynamic = self.current()
        accounts = [{"name": n, "domain": a.Domain, "addresses": sorted(a.Destinations)}
                    for n, a in sorted(dynamic.Accounts.items())]
        count, _ = await self.queue.stats()
        return {"domains": sorted(dynamic.Domains), "accounts": accounts, "queue": {"count": count},
                "hostname": str(static.Hostname)}

    async def _queue_list(self):
        entries = await self.queue.list()
        return [{"id": e.id, "from": e.sender, "to": e.recipient, "attempts": e.attempts,
                 "next_attempt": e.next_attempt.isoformat(), "hold": e.hold, "last_error": e.last_error,
                 "size": e.size, "subject": e.subject} for e in entries[:MAX_QUEUE_LISTED]]

    @staticmethod
    def _ids(fields):
        raw = fields.get("ids") or fields.get("id") or ""
        if len(raw) > 200000:
            raise HTTPError(400, "ids: too many")
        try:
            value = json.loads(raw) if raw.startswith("[") else [raw]
        except (ValueError, RecursionError):
            raise HTTPError(400, "ids: a list of queue ids") from None
        ids = []
        for x in value if isinstance(value, list) else ():
            if isinstance(x, str) and x.isascii() and x.isdigit() and len(x) < 19:
                x = int(x)
            if not isinstance(x, int) or isinstance(x, bool) or not 0 < x < 2 ** 62:
                raise HTTPError(400, "ids: a list of queue ids")
            ids.append(x)
        if not ids or len(ids) > 10000:
            raise HTTPError(400, "ids: 1 to 10000 queue ids")
        return ids

    async def _hold(self, fields, hold):
        ids = self._ids(fields)
        n = await (self.queue.hold(ids) if hold else self.queue.unhold(ids))
        if not hold and self.queue_service is not None and self.queue_service.running:
            self.queue_service.kick()
        log.info("web admin queue {what}", what="hold" if hold else "unhold", ids=",".join(map(str, ids)), count=n)
        return n

    # -- pages

    @app.route("/", methods=["GET"])
    def index(self, request):
        async def work():
            session = await self._session(request, required=False)
            if session is None:
                return base.render(request, "login.html", title="Admin login", action=self.path + "login",
                                   what="admin", message="", base=self.path)
            return base.render(request, "admin.html", title="Admin", o=await self._overview(),
                               queue=await self._queue_list(), csrf=session.csrf, base=self.path)

        return self._handle(request, work)

    @app.route("/login", methods=["POST"])
    def login_page(self, request):
        async def work():
            try:
                await self._login(request, base.form(request))
            except HTTPError as e:
                if e.code in (400, 401, 403, 429):
                    request.setResponseCode(e.code)
                    return base.render(request, "login.html", title="Admin login", action=self.path + "login",
                                       what="admin", message=e.text, base=self.path)
                raise
            return self._redirect(request)

        return self._handle(request, work)

    @app.route("/logout", methods=["POST"])
    def logout_page(self, request):
        async def work():
            await self._logout(request)
            return self._redirect(request)

        return self._handle(request, work)

    @app.route("/queue/<string:what>", methods=["POST"])
    def queue_page(self, request, what):
        async def work():
            if what not in ("hold", "unhold"):
                raise HTTPError(404, "not found")
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            await self._hold(fields, what == "hold")
            return self._redirect(request)

        return self._handle(request, work)

    @app.route("/style.css", methods=["GET"])
    def style(self, request):
        return base.static(request, "style.css")

    # -- JSON API

    @app.route("/api/", methods=["GET"])
    def api_doc(self, request):
        return base.api_doc(request, API, self.path.rstrip("/"))

    @app.route("/api/login", methods=["POST"])
    def api_login(self, request):
        async def work():
            session = await self._login(request, base.form(request))
            return base.json_response(request, {"csrf": session.csrf})

        return self._handle(request, work, api=True)

    @app.route("/api/logout", methods=["POST"])
    def api_logout(self, request):
        async def work():
            await self._logout(request, required=True)
            return base.json_response(request, {"ok": True})

        return self._handle(request, work, api=True)

    @app.route("/api/overview", methods=["GET"])
    def api_overview(self, request):
        async def work():
            await self._session(request)
            return base.json_response(request, await self._overview())

        return self._handle(request, work, api=True)

    @app.route("/api/queue", methods=["GET"])
    def api_queue(self, request):
        async def work():
            await self._session(request)
            return base.json_response(request, await self._queue_list())

        return self._handle(request, work, api=True)

    @app.route("/api/queue/<string:what>", methods=["POST"])
    def api_queue_action(self, request, what):
        async def work():
            if what not in ("hold", "unhold"):
                raise HTTPError(404, "not found")
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            return base.json_response(request, {"count": await self._hold(fields, what == "hold")})

        return self._handle(request, work, api=True)


def password_file_exists(config_path, name):
    return bool(name) and os.path.exists(config_path(name))


__all__ = ["AdminApp", "API"]
