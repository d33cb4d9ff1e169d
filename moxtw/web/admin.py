"""The admin pages (mox's ``/admin/``): log in with the admin password
(``AdminPasswordFile``, written by ``moxtw setadminpassword`` or the quickstart); see the
domains, the accounts with their addresses, and the queue; hold and release queued
messages.

Pages: ``GET /admin/`` (login form or overview), ``POST /admin/login``, ``/admin/logout``,
``/admin/queue/hold``, ``/admin/queue/unhold``; the queue with filters and actions, hold
rules, DMARC and TLS reports and the DNSBL status (``moxtw.web.admin_queue``). The JSON
API under ``/admin/api/`` does the same (listed at ``GET /admin/api/``). The configuration
pages (domains, accounts, aliases, domains.toml, log levels, routes) are in
:mod:`moxtw.web.admin_config`.
"""

import json
import os
from urllib.parse import urlencode

from klein import Klein
from twisted.internet import task, threads
from twisted.logger import Logger

from moxtw.sasl import credentials
from moxtw.web import admin_config, admin_queue, base
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
    ("POST", "/api/queue/hold", "{ids: [id, ...] | scope: filtered, <filter>} -> {count}"),
    ("POST", "/api/queue/unhold", "{ids: [id, ...] | scope: filtered, <filter>} -> {count}: held messages are delivered"),
] + admin_config.API

# -- queue and reports
API += [
    ("GET", "/api/queue/list", "?sender=&recipient=&domain=&held=yes|no&older=1h&newer=2d -> "
     "{entries: [...], total, filter}: substrings of the addresses, the recipient domain, age"),
    ("POST", "/api/queue/reschedule", "{ids: [...] | scope: filtered, <filter>, when: now|+30m} -> {count, next_attempt}"),
    ("POST", "/api/queue/fail", "{ids: [...] | scope: filtered, <filter>, reason} -> {count}: DSN to the sender"),
    ("POST", "/api/queue/drop", "{ids: [...] | scope: filtered, <filter>} -> {count}: removed without DSN"),
    ("GET", "/api/queue/raw", "?id= -> the message (text/plain, at most 1 MiB)"),
    ("GET", "/api/queue/holdrules", "-> [{index, account, sender_domain, recipient_domain}]"),
    ("POST", "/api/queue/holdrules/add", "{account, sender_domain, recipient_domain} -> {index}"),
    ("POST", "/api/queue/holdrules/remove", "{index} -> {removed}"),
    ("GET", "/api/reports/dmarc", "?domain=&days=30 -> {groups: [{domain, day, reports, messages, pass, fail, "
     "sources}], domains}"),
    ("GET", "/api/reports/dmarc/report", "?id= -> a received DMARC aggregate report"),
    ("GET", "/api/reports/evaluations", "?domain= -> {domains: [{domain, evaluations, pass, fail, ...}], evaluations}"),
    ("GET", "/api/reports/tls", "?domain=&days=30 -> {groups: [{domain, day, reports, success, failure, failures}]}"),
    ("GET", "/api/reports/tls/report", "?id= -> a received TLS report"),
    ("GET", "/api/dnsbl", "-> {zones, ips, results: [{zone, ip, status, reason}]}: our IPs in the DNSBLs"),
]


class AdminApp(base.AppBase):
    app = Klein()
    app_name = "admin"

    def __init__(self, config_path, password_file, limits, sessions, current, queue, queue_service=None,
                 clock=None, path="/admin/", queue_reports=None, config_dir=None, data_dir=None, store=None,
                 resolver=None, server=None):
        self.config_path = config_path
        self.password_file = password_file  # () -> AdminPasswordFile or None
        self.limits = limits
        self.sessions = base.Sessions(sessions, "admin", "moxtw_admin", path)
        self.current = current
        self.queue = queue
        self.queue_service = queue_service
        self.clock = clock
        self.path = path
        self.qr = queue_reports or admin_queue.QueueReports(queue, queue_service, None, None, current, None)
        # Domains, accounts, aliases, domains.toml, log levels: moxtw.web.admin_config.
        self.config_admin = admin_config.ConfigAdmin(current, config_dir, data_dir, store, resolver, server,
                                                     sessions, path)

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
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            result = await self._queue_act(request, what, fields)
            return self._redirect(request, self._queue_back(fields, what, result))

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
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            return base.json_response(request, await self._queue_act(request, what, fields))

        return self._handle(request, work, api=True)

    # -- queue and reports (helpers in moxtw.web.admin_queue)

    async def _queue_act(self, request, what, fields):
        """An action of admin_queue.ACTIONS on the selected ids (form checkboxes ``ids``,
        or a JSON list) or, with scope=filtered, on the entries matching the filter."""
        if what not in admin_queue.ACTIONS:
            raise HTTPError(404, "not found")
        f = admin_queue.parse_filter(fields)
        if fields.get("scope") == "filtered":
            ids = None
        else:
            ctype = base.header(request, "content-type").lower()
            values = ((request.args or {}).get(b"ids") or []) if ctype.startswith("application/x-www-form") else []
            if len(values) > 1:  # several checkboxes of a form
                if len(values) > 10000 or not all(v.isascii() and v.isdigit() and len(v) < 19 for v in values):
                    raise HTTPError(400, "ids: a list of queue ids")
                fields = dict(fields, ids=json.dumps([int(v) for v in values]))
            ids = self._ids(fields)
        return await self.qr.act(what, ids, f, fields)

    def _queue_back(self, fields, what=None, result=None):
        """Where a form of the queue page returns to: the queue page with its filter (and
        what was done); other forms return to the overview."""
        if fields.get("back") != "queue":
            return self.path
        try:
            query = admin_queue.parse_filter(fields).query()
        except HTTPError:
            query = {}
        if what is not None:
            query.update(done=what, count=str(int(result.get("count", 0))))
        return self.path + "queue" + ("?" + urlencode(query) if query else "")

    def _admin_page(self, request, template, title, work, **extra):
        """A GET page of a logged-in admin: ``work(fields)`` gives its data ``d``."""
        async def run():
            session = await self._session(request)
            fields = base.form(request)
            data = await work(fields)
            return base.render(request, template, title=title, d=data, csrf=session.csrf, base=self.path,
                               fields=fields, header="Admin", **extra)

        return self._handle(request, run)

    def _admin_api(self, request, work):
        async def run():
            await self._session(request)
            return base.json_response(request, await work(base.form(request)))

        return self._handle(request, run, api=True)

    def _admin_post(self, request, work, page=False):
        async def run():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            result = await work(fields)
            return self._redirect(request, self._queue_back(fields)) if page else base.json_response(request, result)

        return self._handle(request, run, api=not page)

    async def _queue_page_data(self, fields):
        f = admin_queue.parse_filter(fields)
        data = await self.qr.list(f)
        data["rules"] = [dict(r, key=admin_queue.rule_key(r)) for r in self.qr.hold_rules()]
        done = fields.get("done", "")
        count = fields.get("count", "")
        if done in admin_queue.ACTIONS and count.isascii() and count.isdigit() and len(count) < 10:
            data["done"] = {"action": done, "count": int(count)}
        data["query"] = urlencode(f.query())
        return data

    async def _raw(self, request):
        await self._session(request)
        fields = base.form(request)
        text = fields.get("id", "")
        if not (text.isascii() and text.isdigit() and 0 < len(text) < 19 and int(text) > 0):
            raise HTTPError(400, "id: a queue id")
        data, cut = await self.qr.raw(int(text))
        base.security_headers(request)
        # Never rendered as HTML: text/plain with nosniff, and a download.
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="queue-{int(text)}.eml"'.encode())
        if cut:
            request.setHeader(b"x-moxtw-truncated", str(admin_queue.MAX_RAW).encode())
            data += b"\r\n[... cut off after %d bytes]\r\n" % admin_queue.MAX_RAW
        return data

    @app.route("/queue", methods=["GET"])
    def queue_list_page(self, request):
        return self._admin_page(request, "admin_queue.html", "Queue", self._queue_page_data)

    @app.route("/queue/raw", methods=["GET"])
    def queue_raw_page(self, request):
        return self._handle(request, lambda: self._raw(request))

    @app.route("/queue/holdrules/add", methods=["POST"])
    def holdrule_add_page(self, request):
        return self._admin_post(request, self.qr.add_hold_rule, page=True)

    @app.route("/queue/holdrules/remove", methods=["POST"])
    def holdrule_remove_page(self, request):
        return self._admin_post(request, self.qr.remove_hold_rule, page=True)

    @app.route("/reports/dmarc", methods=["GET"])
    def dmarc_page(self, request):
        return self._admin_page(request, "admin_reports_dmarc.html", "DMARC reports", self.qr.dmarc_summary)

    @app.route("/reports/dmarc/report", methods=["GET"])
    def dmarc_report_page(self, request):
        return self._admin_page(request, "admin_reports_dmarc_report.html", "DMARC report", self.qr.dmarc_report)

    @app.route("/reports/evaluations", methods=["GET"])
    def evaluations_page(self, request):
        return self._admin_page(request, "admin_reports_evaluations.html", "DMARC evaluations",
                                self.qr.evaluations)

    @app.route("/reports/tls", methods=["GET"])
    def tls_page(self, request):
        return self._admin_page(request, "admin_reports_tls.html", "TLS reports", self.qr.tls_summary)

    @app.route("/reports/tls/report", methods=["GET"])
    def tls_report_page(self, request):
        return self._admin_page(request, "admin_reports_tls_report.html", "TLS report", self.qr.tls_report)

    @app.route("/dnsbl", methods=["GET"])
    def dnsbl_page(self, request):
        return self._admin_page(request, "admin_reports_dnsbl.html", "DNSBL status",
                                lambda fields: self.qr.dnsbl_status())

    @app.route("/api/queue/list", methods=["GET"])
    def api_queue_list(self, request):
        return self._admin_api(request, lambda fields: self.qr.list(admin_queue.parse_filter(fields)))

    @app.route("/api/queue/raw", methods=["GET"])
    def api_queue_raw(self, request):
        return self._handle(request, lambda: self._raw(request), api=True)

    @app.route("/api/queue/holdrules", methods=["GET"])
    def api_holdrules(self, request):
        async def rules(fields):
            return self.qr.hold_rules()

        return self._admin_api(request, rules)

    @app.route("/api/queue/holdrules/add", methods=["POST"])
    def api_holdrule_add(self, request):
        return self._admin_post(request, self.qr.add_hold_rule)

    @app.route("/api/queue/holdrules/remove", methods=["POST"])
    def api_holdrule_remove(self, request):
        return self._admin_post(request, self.qr.remove_hold_rule)

    @app.route("/api/reports/dmarc", methods=["GET"])
    def api_dmarc(self, request):
        return self._admin_api(request, self.qr.dmarc_summary)

    @app.route("/api/reports/dmarc/report", methods=["GET"])
    def api_dmarc_report(self, request):
        return self._admin_api(request, self.qr.dmarc_report)

    @app.route("/api/reports/evaluations", methods=["GET"])
    def api_evaluations(self, request):
        return self._admin_api(request, self.qr.evaluations)

    @app.route("/api/reports/tls", methods=["GET"])
    def api_tls(self, request):
        return self._admin_api(request, self.qr.tls_summary)

    @app.route("/api/reports/tls/report", methods=["GET"])
    def api_tls_report(self, request):
        return self._admin_api(request, self.qr.tls_report)

    @app.route("/api/dnsbl", methods=["GET"])
    def api_dnsbl(self, request):
        return self._admin_api(request, lambda fields: self.qr.dnsbl_status())

    # -- domains, accounts, aliases, config
    # Pages and API calls of moxtw.web.admin_config: GET pages need a session (else the
    # login page), every POST also the CSRF token; errors are shown on the page, or as
    # 400 {error} by the API.

    def _config_page(self, request, name, **args):
        async def work():
            session = await self._session(request, required=False)
            if session is None:
                return self._redirect(request)
            return await self.config_admin.page(request, session, name, args)

        return self._handle(request, work)

    def _config_action(self, request, action):
        async def work():
            session = await self._session(request)
            fields = base.form(request, limit=admin_config.form_limit(action))
            self.sessions.check_csrf(request, session, fields)
            return await self.config_admin.page_action(request, session, action, fields)

        return self._handle(request, work)

    def _config_api(self, request, name, **args):
        async def work():
            session = await self._session(request)
            if request.method == b"POST":
                form = base.form(request, limit=admin_config.form_limit(name))
                self.sessions.check_csrf(request, session, form)
                return await self.config_admin.api_action(request, name, form)
            return await self.config_admin.api_get(request, name, args)

        return self._handle(request, work, api=True)

    @app.route("/domains", methods=["GET"])
    def domains_page(self, request):
        return self._config_page(request, "domains")

    @app.route("/domains/<string:domain>", methods=["GET"])
    def domain_page(self, request, domain):
        return self._config_page(request, "domain", domain=domain)

    @app.route("/domains/<string:domain>/dnscheck", methods=["GET"])
    def dnscheck_page(self, request, domain):
        return self._config_page(request, "dnscheck", domain=domain)

    @app.route("/accounts", methods=["GET"])
    def accounts_page(self, request):
        return self._config_page(request, "accounts")

    @app.route("/accounts/<string:account>", methods=["GET"])
    def account_page(self, request, account):
        return self._config_page(request, "account", account=account)

    @app.route("/config", methods=["GET"])
    def config_page(self, request):
        return self._config_page(request, "config")

    @app.route("/logging", methods=["GET"])
    def logging_page(self, request):
        return self._config_page(request, "logging")

    @app.route("/routes", methods=["GET"])
    def routes_page(self, request):
        return self._config_page(request, "routes")

    @app.route("/<any(domains,accounts,addresses,aliases,config,logging):group>/<string:action>", methods=["POST"])
    def config_action_page(self, request, group, action):
        return self._config_action(request, f"{group}/{action}")

    @app.route("/api/domains", methods=["GET"])
    def api_domains(self, request):
        return self._config_api(request, "domains")

    @app.route("/api/domains/<string:domain>", methods=["GET"])
    def api_domain(self, request, domain):
        return self._config_api(request, "domain", domain=domain)

    @app.route("/api/domains/<string:domain>/<any(dnscheck,aliases):what>", methods=["GET"])
    def api_domain_more(self, request, domain, what):
        return self._config_api(request, what, domain=domain)

    @app.route("/api/accounts", methods=["GET"])
    def api_accounts(self, request):
        return self._config_api(request, "accounts")

    @app.route("/api/accounts/<string:account>", methods=["GET"])
    def api_account(self, request, account):
        return self._config_api(request, "account", account=account)

    @app.route("/api/<any(config,loglevels,routes):name>", methods=["GET"])
    def api_config_get(self, request, name):
        return self._config_api(request, name)

    @app.route("/api/<any(config,loglevels):name>", methods=["POST"])
    def api_config_set(self, request, name):
        return self._config_api(request, f"{name}/set")

    @app.route("/api/<any(domains,accounts,addresses,aliases):group>/<string:action>", methods=["POST"])
    def api_config_action(self, request, group, action):
        return self._config_api(request, f"{group}/{action}")


def password_file_exists(config_path, name):
    return bool(name) and os.path.exists(config_path(name))


__all__ = ["AdminApp", "API"]
