"""The account pages (mox's ``/``): log in with an account address (or name) and its
password; see the account's addresses, quota use and login sessions; change the
password (which ends the other sessions); log out.

Pages: ``GET /`` (login form or overview), ``POST /login``, ``/logout``, ``/password``,
``/sessions/revoke``. The JSON API under ``/api/`` does the same (listed at ``GET
/api/``), with the session cookie and the CSRF token in ``X-CSRF-Token``.
"""


from klein import Klein
from twisted.internet import task
from twisted.logger import Logger

from moxtw.auth import AuthFailed, LoginDisabled
from moxtw.sasl.credentials import PasswordError
from moxtw.web import base
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

API = [
    ("POST", "/api/login", "log in: {login, password} -> {account, csrf}; sets the session cookie"),
    ("POST", "/api/logout", "end this session"),
    ("GET", "/api/overview", "-> {account, full_name, addresses, quota_used, quota_limit}"),
    ("POST", "/api/password", "{password} -> {ok}: set a new password, ending the other sessions"),
    ("GET", "/api/sessions", "-> [{id, created, last_used, expires, remote_ip, user_agent, current}]"),
    ("POST", "/api/sessions/revoke", "{id} -> {removed}: end one of the account's sessions"),
]


class AccountApp(base.AppBase):
    app = Klein()
    app_name = "account"

    def __init__(self, store, authenticator, login_limits, sessions, current, clock=None, path="/"):
        self.store = store
        self.auth = authenticator
        self.limits = login_limits
        self.sessions = base.Sessions(sessions, "account", "moxtw_account", path)
        self.current = current  # () -> (static, dynamic)
        self.clock = clock
        self.path = path

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

    async def _set_password(self, session, fields):
        password = fields.get("password", "")
        if fields.get("password2") is not None and fields["password2"] != password:
            raise HTTPError(400, "the passwords differ")
        if len(password) < 8 or len(password) > 1024:
            raise HTTPError(400, "a password has 8 to 1024 characters")
        acc = await self.store.open_account(session.account)
        try:
            await acc.set_password(password)
        except PasswordError as e:
            raise HTTPError(400, f"password refused: {e}") from None
        await self.sessions.store.remove_others("account", session.account, session.id)
        log.info("web password change", account=session.account)

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
            await self._set_password(session, fields)
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
            await self._set_password(session, fields)
            return base.json_response(request, {"ok": True})

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
