"""The account pages (mox's ``/``): log in with an account address (or name) and its
password; see the account's addresses, quota use and login sessions; change the
password (which ends the other sessions); log out. Beyond the overview: the full name
and the delivery rules of each address (``/settings``, moxtw.web.account_rules), app
passwords for mail clients (``/apppasswords``, moxtw.apppasswords), and import and export
of the account's mail (``/transfer``, moxtw.web.transfer).

Pages: ``GET /`` (login form or overview), ``POST /login``, ``/logout``, ``/password``,
``/sessions/revoke`` and the forms of the pages above. The JSON API under ``/api/`` does
the same (listed at ``GET /api/``), with the session cookie and the CSRF token in
``X-CSRF-Token``. An account only ever sees and changes its own settings and mail: the
session names the account, requests never do.
"""

import secrets

from klein import Klein
from twisted.internet import task
from twisted.logger import Logger

from moxtw import apppasswords
from moxtw.auth import AuthFailed, LoginDisabled
from moxtw.sasl.credentials import PasswordError
from moxtw.web import base, transfer
from moxtw.web.account_rules import Rules, destinations
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

API = [
    ("POST", "/api/login", "log in: {login, password} -> {account, csrf}; sets the session cookie"),
    ("POST", "/api/logout", "end this session"),
    ("GET", "/api/overview", "-> {account, full_name, addresses, quota_used, quota_limit}"),
    ("POST", "/api/password", "{password, generate} -> {ok, password}: set a new password, or with generate=1 a "
     "random one (returned; the only kind with NoCustomPassword), ending the other sessions"),
    ("GET", "/api/sessions", "-> [{id, created, last_used, expires, remote_ip, user_agent, current}]"),
    ("POST", "/api/sessions/revoke", "{id} -> {removed}: end one of the account's sessions"),
    ("GET", "/api/destinations", "-> {full_name, destinations: [{address, mailbox, rulesets: [{index, "
     "smtp_mail_from_regexp, msg_from_regexp, verified_domain, headers, is_forward, list_allow_domain, "
     "accept_rejects_to_mailbox, mailbox, comment}]}]}"),
    ("POST", "/api/fullname", "{full_name} -> {ok}"),
    ("POST", "/api/destination/mailbox", "{address, mailbox} -> {ok}: the default mailbox of an address"),
    ("POST", "/api/ruleset/save", "{address, index (empty: add), ruleset fields; headers as lines "
     "'field-regexp: value-regexp'} -> {ok}"),
    ("POST", "/api/ruleset/remove", "{address, index, version} -> {ok}: version (optional): the destination's, as listed; 409 when stale"),
    ("POST", "/api/ruleset/move", "{address, index, direction up|down, or to} -> {ok}"),
    ("GET", "/api/apppasswords", "-> [{id, name, created, last_used}]"),
    ("POST", "/api/apppasswords/create", "{name} -> {id, name, password}: shown this once; for IMAP and "
     "SMTP submission, not this web login"),
    ("POST", "/api/apppasswords/revoke", "{id} -> {removed}"),
    ("POST", "/api/import", "body: the file (mbox, .zip or .tgz of mbox files or a maildir), "
     "Content-Type application/octet-stream; query: format (mbox|maildir|empty), mailbox (empty: "
     "folders at the top) -> {id}"),
    ("GET", "/api/import/<id>", "-> {id, state (unpacking|counting|importing|done|failed), total, "
     "imported, duplicates, too_large, mailboxes, notes, error, percent}"),
    ("GET", "/api/export", "query: format mbox|maildir, archive zip|tgz, mailbox (empty: all) -> the "
     "archive, streamed"),
]


class AccountApp(base.AppBase):
    app = Klein()
    app_name = "account"

    def __init__(self, store, authenticator, login_limits, sessions, current, clock=None, path="/",
                 config_dir=None, reload=None, data_dir=None, import_max_bytes=transfer.IMPORT_MAX_BYTES):
        """``config_dir`` and ``reload()`` (read domains.toml now): for the account's
        settings; ``data_dir``: for imports (work directories under data/webimport);
        ``import_max_bytes``: the largest upload to import."""
        self.store = store
        self.auth = authenticator
        self.limits = login_limits
        self.sessions = base.Sessions(sessions, "account", "moxtw_account", path)
        self.current = current  # () -> (static, dynamic)
        self.clock = clock
        self.path = path
        self.rules = Rules(config_dir, current, reload)
        self.imports = transfer.Imports(store, data_dir, import_max_bytes)

    def body_limit(self, path, headers):
        """Uploads to import (raw bodies) may be as large as ``import_max_bytes``, for a
        session seen valid recently and its CSRF token only: the body is spooled to disk
        before the handler runs, so without a session nobody gets more than MAX_BODY."""
        path = path.split(b"?", 1)[0]
        ctype = (headers.getRawHeaders(b"content-type") or [b""])[0].split(b";")[0].strip().lower()
        if path != (self.path + "api/import").encode() or ctype != b"application/octet-stream":
            return None
        if not self._recent_session(headers):
            return None
        return self.imports.max_bytes + 1  # one more: "too large" is then ours to say

    # Sessions seen valid lately (token hash -> (CSRF token, until)): a synchronous
    # check for body_limit only; every request still looks its session up.
    RECENT_SESSION_TTL = 900.0
    MAX_RECENT_SESSIONS = 10000

    def _remember_session(self, token, session):
        import hashlib
        import time

        recent = self.__dict__.setdefault("_recent", {})
        if len(recent) >= self.MAX_RECENT_SESSIONS:
            now = time.monotonic()
            for k in [k for k, (_, until) in recent.items() if until < now] or list(recent)[:len(recent) // 2]:
                del recent[k]
        recent[hashlib.sha256(token).digest()] = (session.csrf, time.monotonic() + self.RECENT_SESSION_TTL)

    def _recent_session(self, headers):
        import hashlib
        import time
        from http.cookies import SimpleCookie

        recent = self.__dict__.get("_recent") or {}
        csrf = (headers.getRawHeaders(b"x-csrf-token") or [b""])[0]
        for raw in headers.getRawHeaders(b"cookie") or []:
            try:
                jar = SimpleCookie(raw.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header: no session
                continue
            morsel = jar.get(self.sessions.cookie.decode())
            if morsel is None:
                continue
            entry = recent.get(hashlib.sha256(morsel.value.encode("latin-1")).digest())
            if entry is not None and entry[1] > time.monotonic() and csrf and \
                    base.secrets_equal(csrf.decode("latin-1"), entry[0]):
                return True
        return False

    # -- plumbing

    async def _session(self, request, required=True):
        session = await self.sessions.current(request)
        if session is not None:
            _, dynamic = self.current()
            conf = dynamic.Accounts.get(session.account)
            if conf is None or conf.LoginDisabled:
                # Removed or suspended since the login: the session ends now.
                await self.sessions.store.remove(session.id)
                session = None
        if session is not None:
            token = request.getCookie(self.sessions.cookie)
            if token:
                self._remember_session(token, session)
        if session is None and required:
            raise HTTPError(401, "not logged in")
        return session

    async def _login(self, request, fields):
        ip = base.remote_ip(request)
        base.check_origin(request)
        login = fields.get("login", "").strip()
        password = fields.get("password", "")
        if not login or not password or len(login) > 256 or len(password) > 1024:
            raise HTTPError(400, "login and password required")
        return await base.one_login_at_a_time(ip, lambda: self._login_checked(request, ip, login, password))

    async def _login_checked(self, request, ip, login, password):
        # The same limits as SMTP and IMAP: per IP, and per IP and login.
        why = self.limits.allowed_login(ip, login)
        if why is not None:
            raise HTTPError(429, why)
        try:
            acc = await self.auth.authenticate(login, password)
        except (AuthFailed, LoginDisabled) as e:
            delay = self.limits.record(ip, login, False)
            if delay:
                await task.deferLater(self._reactor(), delay, lambda: None)
            raise HTTPError(401, "invalid login or password" if isinstance(e, AuthFailed) else "login disabled") \
                from None
        self.limits.record(ip, login, True)
        token, session = await self.sessions.store.create(
            "account", acc.name, login, ip, base.header(request, "user-agent"))
        self.sessions.set_cookie(request, token)
        self._remember_session(token.encode("ascii"), session)
        log.info("web login", account=acc.name, ip=ip)
        return session

    async def _overview(self, session):
        static, dynamic = self.current()
        conf = dynamic.Accounts.get(session.account)
        if conf is None:
            raise HTTPError(404, "account no longer exists")
        acc = await self.store.open_account(session.account)
        used = await acc.quota_used()
        limit = getattr(acc, "quota", 0) or 0
        return {"account": session.account, "full_name": conf.FullName or "",
                "addresses": sorted(conf.Destinations), "quota_used": used, "quota_limit": limit}

    def _no_custom_password(self, session):
        conf = self.current()[1].Accounts.get(session.account)
        return bool(conf is not None and conf.NoCustomPassword)

    async def _set_password(self, session, fields):
        """Set the password given, or with ``generate`` a random one (the only kind an
        account with NoCustomPassword may get); returns the generated password or None."""
        generated = None
        if fields.get("generate") in ("1", "true", "yes"):
            generated = password = secrets.token_urlsafe(12)
        elif self._no_custom_password(session):
            raise HTTPError(403, "this account cannot choose its password: generate one")
        else:
            password = fields.get("password", "")
        if generated is None and fields.get("password2") is not None and fields["password2"] != password:
            raise HTTPError(400, "the passwords differ")
        if len(password) < 8 or len(password) > 1024:
            raise HTTPError(400, "a password has 8 to 1024 characters")
        acc = await self.store.open_account(session.account)
        try:
            await acc.set_password(password)
        except PasswordError as e:
            raise HTTPError(400, f"password refused: {e}") from None
        await self.sessions.store.remove_others("account", session.account, session.id)
        log.info("web password change", account=session.account, generated=generated is not None)
        return generated

    def _session_list(self, sessions, current):
        return [{"id": s.id, "created": s.created, "last_used": s.last_used, "expires": s.expires,
                 "remote_ip": s.remote_ip, "user_agent": s.user_agent, "current": s.id == current.id}
                for s in sessions]

    async def _revoke(self, session, fields):
        sid = fields.get("id", "")
        mine = {s.id for s in await self.sessions.store.list("account", session.account)}
        if sid not in mine:
            raise HTTPError(404, "no such session")  # not another account's
        return await self.sessions.store.remove(sid)

    # -- pages

    @app.route("/", methods=["GET"])
    def index(self, request):
        async def work():
            session = await self._session(request, required=False)
            if session is None:
                return base.render(request, "login.html", title="Log in", action=self.path + "login",
                                   what="account", message="")
            overview = await self._overview(session)
            sessions = self._session_list(await self.sessions.store.list("account", session.account), session)
            return base.render(request, "account.html", title=f"Account {session.account}", o=overview,
                               sessions=sessions, csrf=session.csrf, base=self.path,
                               no_custom_password=self._no_custom_password(session),
                               changed=request.args.get(b"changed") == [b"1"])

        return self._handle(request, work)

    @app.route("/login", methods=["POST"])
    def login_page(self, request):
        async def work():
            try:
                await self._login(request, base.form(request))
            except HTTPError as e:
                if e.code in (400, 401, 429):
                    request.setResponseCode(e.code)
                    return base.render(request, "login.html", title="Log in", action=self.path + "login",
                                       what="account", message=e.text)
                raise
            return self._redirect(request)

        return self._handle(request, work)

    @app.route("/logout", methods=["POST"])
    def logout_page(self, request):
        async def work():
            await self._logout(request)
            return self._redirect(request)

        return self._handle(request, work)

    @app.route("/password", methods=["POST"])
    def password_page(self, request):
        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            generated = await self._set_password(session, fields)
            if generated is not None:
                # Shown this once, in the answer to the POST (never in a URL).
                return base.render(request, "account_newpassword.html", title="New password", password=generated,
                                   csrf=session.csrf, base=self.path, header="Account " + session.account)
            return self._redirect(request, self.path + "?changed=1")

        return self._handle(request, work)

    @app.route("/sessions/revoke", methods=["POST"])
    def revoke_page(self, request):
        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            await self._revoke(session, fields)
            return self._redirect(request)

        return self._handle(request, work)

    # -- settings, app passwords, import and export (helpers)

    def _post(self, request, do, api, page=None):
        """A state-changing request: session, CSRF and Origin, then ``do(session,
        fields)``; its result as JSON, or ``page(session, result)`` for a form."""
        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            result = await do(session, fields)
            if api:
                return base.json_response(request, result)
            return await page(session, result)

        return self._handle(request, work, api=api)

    def _settings_data(self, session):
        conf = self.current()[1].Accounts.get(session.account)
        if conf is None:
            raise HTTPError(404, "account no longer exists")
        return {"full_name": conf.FullName or "", "destinations": destinations(conf)}

    async def _settings_page(self, request, session, message="", ok="", code=200):
        request.setResponseCode(code)
        return base.render(request, "account_settings.html", title="Addresses and rules", account=session.account,
                           s=self._settings_data(session), csrf=session.csrf, base=self.path, message=message,
                           ok=ok)

    def _settings_post(self, request, method, api):
        async def do(session, fields):
            await method(session.account, fields)
            return {"ok": True}

        if api:
            return self._post(request, do, True)

        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            try:
                await method(session.account, fields)
            except HTTPError as e:
                if e.code in (400, 404):
                    return await self._settings_page(request, session, message=e.text, code=e.code)
                raise
            return self._redirect(request, self.path + "settings?saved=1")

        return self._handle(request, work)

    async def _app_password_create(self, session, fields):
        acc = await self.store.open_account(session.account)
        try:
            pid, password = await apppasswords.create(acc, fields.get("name", ""))
        except apppasswords.AppPasswordError as e:
            raise HTTPError(400, str(e)) from None
        log.info("app password created", account=session.account, id=pid)
        return {"id": pid, "name": fields.get("name", "").strip(), "password": password}

    async def _app_password_revoke(self, session, fields):
        try:
            pid = int(fields.get("id", ""))
        except ValueError:
            raise HTTPError(400, "id: a number expected") from None
        acc = await self.store.open_account(session.account)  # its own passwords only
        removed = await apppasswords.revoke(acc, pid)
        if not removed:
            raise HTTPError(404, "no such app password")
        log.info("app password revoked", account=session.account, id=pid)
        return {"removed": removed}

    async def _app_passwords_page(self, request, session, created=None):
        acc = await self.store.open_account(session.account)
        items = await apppasswords.list_(acc)
        return base.render(request, "account_apppasswords.html", title="App passwords", account=session.account,
                           items=items, created=created, csrf=session.csrf, base=self.path)

    def _query(self, request):
        out = {}
        for k, v in (request.args or {}).items():
            try:
                out[k.decode("utf-8")] = v[0].decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPError(400, "invalid UTF-8 in query") from None
        return out

    # -- settings pages

    @app.route("/settings", methods=["GET"])
    def settings_page(self, request):
        async def work():
            session = await self._session(request)
            return await self._settings_page(request, session,
                                             ok="Saved." if request.args.get(b"saved") == [b"1"] else "")

        return self._handle(request, work)

    @app.route("/fullname", methods=["POST"])
    def fullname_page(self, request):
        return self._settings_post(request, self.rules.set_full_name, False)

    @app.route("/destination/mailbox", methods=["POST"])
    def destination_mailbox_page(self, request):
        return self._settings_post(request, self.rules.set_mailbox, False)

    @app.route("/ruleset/save", methods=["POST"])
    def ruleset_save_page(self, request):
        return self._settings_post(request, self.rules.save_ruleset, False)

    @app.route("/ruleset/remove", methods=["POST"])
    def ruleset_remove_page(self, request):
        return self._settings_post(request, self.rules.remove_ruleset, False)

    @app.route("/ruleset/move", methods=["POST"])
    def ruleset_move_page(self, request):
        return self._settings_post(request, self.rules.move_ruleset, False)

    @app.route("/apppasswords", methods=["GET"])
    def apppasswords_page(self, request):
        async def work():
            return await self._app_passwords_page(request, await self._session(request))

        return self._handle(request, work)

    @app.route("/apppasswords/create", methods=["POST"])
    def apppasswords_create_page(self, request):
        async def page(session, created):
            return await self._app_passwords_page(request, session, created)

        return self._post(request, self._app_password_create, False, page)

    @app.route("/apppasswords/revoke", methods=["POST"])
    def apppasswords_revoke_page(self, request):
        async def page(session, result):
            return self._redirect(request, self.path + "apppasswords")

        return self._post(request, self._app_password_revoke, False, page)

    @app.route("/transfer", methods=["GET"])
    def transfer_page(self, request):
        async def work():
            session = await self._session(request)
            acc = await self.store.open_account(session.account)
            boxes = await acc.mailboxes()
            return base.render(request, "account_transfer.html", title="Import and export", account=session.account,
                               mailboxes=sorted(getattr(b, "name", b) for b in boxes), csrf=session.csrf,
                               base=self.path, max_bytes=self.imports.max_bytes)

        return self._handle(request, work)

    @app.route("/export", methods=["GET"])
    def export_page(self, request):
        return self.api_export(request)

    @app.route("/static/<string:name>", methods=["GET"])
    def static_file(self, request, name):
        if name not in ("transfer.js",):
            request.setResponseCode(404)
            base.security_headers(request)
            return b"not found\n"
        return base.static(request, name)

    # -- settings API

    @app.route("/api/destinations", methods=["GET"])
    def api_destinations(self, request):
        async def work():
            session = await self._session(request)
            return base.json_response(request, self._settings_data(session))

        return self._handle(request, work, api=True)

    @app.route("/api/fullname", methods=["POST"])
    def api_fullname(self, request):
        return self._settings_post(request, self.rules.set_full_name, True)

    @app.route("/api/destination/mailbox", methods=["POST"])
    def api_destination_mailbox(self, request):
        return self._settings_post(request, self.rules.set_mailbox, True)

    @app.route("/api/ruleset/save", methods=["POST"])
    def api_ruleset_save(self, request):
        return self._settings_post(request, self.rules.save_ruleset, True)

    @app.route("/api/ruleset/remove", methods=["POST"])
    def api_ruleset_remove(self, request):
        return self._settings_post(request, self.rules.remove_ruleset, True)

    @app.route("/api/ruleset/move", methods=["POST"])
    def api_ruleset_move(self, request):
        return self._settings_post(request, self.rules.move_ruleset, True)

    @app.route("/api/apppasswords", methods=["GET"])
    def api_apppasswords(self, request):
        async def work():
            session = await self._session(request)
            acc = await self.store.open_account(session.account)
            return base.json_response(request, await apppasswords.list_(acc))

        return self._handle(request, work, api=True)

    @app.route("/api/apppasswords/create", methods=["POST"])
    def api_apppasswords_create(self, request):
        return self._post(request, self._app_password_create, True)

    @app.route("/api/apppasswords/revoke", methods=["POST"])
    def api_apppasswords_revoke(self, request):
        return self._post(request, self._app_password_revoke, True)

    # -- import and export API

    @app.route("/api/import", methods=["POST"])
    def api_import(self, request):
        async def work():
            session = await self._session(request)
            # The body is the file: the fields are in the query, the token in the header.
            fields = self._query(request)
            fields.pop("csrf", None)
            self.sessions.check_csrf(request, session, fields)
            ctype = base.header(request, "content-type").split(";")[0].strip().lower()
            if ctype != "application/octet-stream":
                raise HTTPError(415, "send the file as the body, Content-Type application/octet-stream")
            job = await self.imports.start(session.account, request.content, fields)
            return base.json_response(request, {"id": job.id})

        return self._handle(request, work, api=True)

    @app.route("/api/import/<string:job_id>", methods=["GET"])
    def api_import_status(self, request, job_id):
        async def work():
            session = await self._session(request)
            return base.json_response(request, self.imports.get(session.account, job_id).status())

        return self._handle(request, work, api=True)

    @app.route("/api/export", methods=["GET"])
    def api_export(self, request):
        async def work():
            session = await self._session(request)
            base.security_headers(request)
            await transfer.export(request, self._reactor(), self.store, session.account, self._query(request))
            return b""

        return self._handle(request, work, api=True)

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
            return base.json_response(request, {"account": session.account, "csrf": session.csrf})

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
            session = await self._session(request)
            return base.json_response(request, await self._overview(session))

        return self._handle(request, work, api=True)

    @app.route("/api/password", methods=["POST"])
    def api_password(self, request):
        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            generated = await self._set_password(session, fields)
            return base.json_response(request, {"ok": True, "password": generated} if generated else {"ok": True})

        return self._handle(request, work, api=True)

    @app.route("/api/sessions", methods=["GET"])
    def api_sessions(self, request):
        async def work():
            session = await self._session(request)
            sessions = await self.sessions.store.list("account", session.account)
            return base.json_response(request, self._session_list(sessions, session))

        return self._handle(request, work, api=True)

    @app.route("/api/sessions/revoke", methods=["POST"])
    def api_revoke(self, request):
        async def work():
            session = await self._session(request)
            fields = base.form(request)
            self.sessions.check_csrf(request, session, fields)
            return base.json_response(request, {"removed": await self._revoke(session, fields)})

        return self._handle(request, work, api=True)


__all__ = ["AccountApp", "API"]
