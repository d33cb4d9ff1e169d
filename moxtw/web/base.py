"""What every web app of moxtw shares: templates, security headers, sessions with CSRF
tokens, login with the shared failure limits, JSON answers, access log lines.

Pages are rendered on the server (Jinja2, autoescaped); each action is a form POST to
the page's app and the same action is a JSON call under the app's ``/api/`` (for
scripts and tests), with the same checks: a session cookie, and for every POST the
session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) and, when the
browser sends one, an ``Origin`` of this server.
"""

import json
import time
from urllib.parse import urlparse

import jinja2
from twisted.internet import defer
from twisted.web import server
from twisted.logger import Logger

from moxtw import metrics

log = Logger(namespace="moxtw.web")

MAX_FORM = 64 * 1024  # bytes of a form or JSON body

_env = jinja2.Environment(loader=jinja2.PackageLoader("moxtw.web", "templates"),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True))

def _time(value):
    """Unix seconds or an ISO time as "2026-12-07 12:38 UTC"."""
    from datetime import datetime, timezone

    try:
        t = datetime.fromtimestamp(float(value), timezone.utc) if not isinstance(value, str) \
            else datetime.fromisoformat(value).astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return t.strftime("%Y-%m-%d %H:%M UTC")


_env.filters["time"] = _time

# A strict policy: no inline scripts or styles, nothing from elsewhere, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class HTTPError(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def header(request, name):
    """A request header as text ("" when absent)."""
    value = request.getHeader(name.encode("ascii"))
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


def _forwarded(request, name):
    """The last value of an X-Forwarded-* header when the interface trusts them (its
    Forwarded setting, behind a reverse proxy), else None. The last value is the one the
    proxy in front of us added; earlier ones come from the client."""
    if not getattr(request, "moxtw_forwarded", False):
        return None
    values = request.requestHeaders.getRawHeaders(name.encode("ascii")) or []
    items = [v.strip() for raw in values for v in raw.decode("latin-1").split(",") if v.strip()]
    return items[-1] if items else None


def is_tls(request):
    proto = _forwarded(request, "x-forwarded-proto")
    if proto is not None:
        return proto.lower() == "https"
    return bool(request.isSecure())


def security_headers(request):
    request.setHeader(b"content-security-policy", CSP.encode())
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"cache-control", b"no-store")
    if is_tls(request):
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


def render(request, template, **context):
    security_headers(request)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return _env.get_template(template).render(**context).encode("utf-8")


def static(request, name):
    """A file of moxtw/web/static (CSS, ES modules), cacheable for an hour."""
    import importlib.resources

    data = importlib.resources.files("moxtw.web").joinpath("static").joinpath(name).read_bytes()
    security_headers(request)
    request.setHeader(b"cache-control", b"max-age=3600")
    request.setHeader(b"content-type", b"text/css; charset=utf-8" if name.endswith(".css") else
                      b"text/javascript; charset=utf-8" if name.endswith(".js") else
                      b"application/octet-stream")
    return data


def json_response(request, value, code=200):
    if isinstance(value, dict) and "csrf" in value:
        request.moxtw_no_compress = True  # a secret: never compressed (BREACH)
    security_headers(request)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode("utf-8") + b"\n"


def _example(method, path, about, base_url):
    """A curl command for one API call, its body made from the fields the description
    names in braces before "->" (``log in: {login, password} -> ...``)."""
    import re

    url = base_url + re.sub(r"<(?:[^:>]*:)?([^>]*)>", lambda m: "{" + m.group(1) + "}", path)
    if method == "GET":
        return f"curl -b jar '{url}'"
    fields = []
    m = re.search(r"\{([^{}]*)\}\s*->", about)
    if m:
        inner = re.sub(r"\[[^\]]*\]", "", m.group(1))
        for piece in re.split(r"[,|]", inner):
            name = piece.split(":")[0].strip()
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in fields:
                fields.append(name)
    body = json.dumps({f: "..." for f in fields})
    jar = "-c jar" if path.endswith("/login") else "-b jar -H 'X-CSRF-Token: CSRF'"
    return f"curl {jar} -H 'Content-Type: application/json' -d '{body}' '{url}'"


def api_doc(request, entries, prefix):
    """``GET <app>/api/``: the calls as JSON [{method, path, about}], or for a browser
    (Accept: text/html) a page with an example for each."""
    listed = [{"method": m, "path": prefix + p, "about": a} for m, p, a in entries]
    accept = header(request, "accept").lower()
    if "text/html" not in accept:
        return json_response(request, listed)
    host = header(request, "host") or "localhost"
    base_url = ("https://" if is_tls(request) else "http://") + host
    shown = [dict(e, example=_example(e["method"], e["path"], e["about"], base_url),
                  anchor=(e["method"] + e["path"]).replace("/", "-").replace("<", "").replace(">", "").replace(":", ""))
             for e in listed]
    return render(request, "api.html", title="API", prefix=prefix, entries=shown, base=prefix + "/")


def remote_ip(request):
    """The client's IP: the peer, or behind a trusted proxy its X-Forwarded-For."""
    import ipaddress

    forwarded = _forwarded(request, "x-forwarded-for")
    if forwarded is not None:
        try:
            return str(ipaddress.ip_address(forwarded.strip("[]")))
        except ValueError:
            pass  # not an address: the proxy's own
    peer = request.getClientAddress()
    return getattr(peer, "host", "") or ""


def form(request, limit=MAX_FORM):
    """The form fields (str -> str, first value) of a POST; HTTPError 413 when larger
    than ``limit`` bytes, 400 for invalid UTF-8."""
    body = request.content.read(limit + 1) if request.content is not None else b""
    if len(body) > limit:
        raise HTTPError(413, "request too large")
    ctype = header(request, "content-type").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            value = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HTTPError(400, "invalid JSON") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "JSON object expected")
        out = {}
        for k, v in value.items():
            if not _encodable(k) or (isinstance(v, str) and not _encodable(v)):
                # JSON "\ud800": a lone surrogate, no character of UTF-8 (RFC 8259 8.2).
                raise HTTPError(400, "invalid JSON: a string is not valid Unicode")
            if isinstance(v, str):
                out[k] = v
            elif isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                out[k] = json.dumps(v)  # lists of ids
            else:
                raise HTTPError(400, f"field {k[:40]!r}: a string expected")
        return out
    out = {}
    for key, values in (request.args or {}).items():
        try:
            out[key.decode("utf-8")] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "invalid UTF-8 in form") from None
    return out


def _encodable(text):
    """Whether ``text`` is valid Unicode (no lone surrogates), as UTF-8 can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_origin(request):
    """RFC 6454 Origin of a state-changing request: when sent, it must be this server."""
    origin = header(request, "origin")
    if not origin:
        return  # browsers send Origin with every cross-site POST (SameSite does the rest)
    if origin == "null":
        # Sandboxed frames and data: pages: never this server's own pages.
        raise HTTPError(403, "cross-origin request refused")
    host = header(request, "host").lower()
    parsed = urlparse(origin)
    expected = "https" if is_tls(request) else "http"
    if parsed.netloc.lower() != host or parsed.scheme != expected:
        raise HTTPError(403, "cross-origin request refused")


_login_locks = {}


async def one_login_at_a_time(ip, work):
    """Run the login ``work()`` for ``ip`` after the previous one from that IP: the
    failure limits are checked and counted in turn, so parallel attempts do not get more
    tries than sequential ones."""
    lock = _login_locks.get(ip)
    if lock is None:
        lock = _login_locks[ip] = defer.DeferredLock()
    await lock.acquire()
    try:
        return await work()
    finally:
        lock.release()
        if not lock.locked and not lock.waiting:
            _login_locks.pop(ip, None)


def host_allowed(request, names):
    """DNS rebinding guard: the Host header must be an IP address, localhost, or one of
    ``names`` (the host name, listener and domain names) or below them."""
    import ipaddress

    host = header(request, "host").lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.rstrip(".")
    if not host:
        return True  # HTTP/1.0 without Host: only a direct client
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return any(host == n or host.endswith("." + n) for n in names)


class Sessions:
    """Session handling for one app: ``kind`` ("account" or "admin"), its cookie name and
    path."""

    def __init__(self, store, kind, cookie, path):
        self.store = store
        self.kind = kind
        self.cookie = cookie.encode()
        self.path = path

    def set_cookie(self, request, token, clear=False):
        attrs = [f"Path={self.path}", "HttpOnly", "SameSite=Strict"]
        if is_tls(request):
            attrs.append("Secure")
        if clear:
            attrs.append("Max-Age=0")
        request.setHeader(b"set-cookie", (self.cookie + b"=" + token.encode() + b"; " +
                                          "; ".join(attrs).encode()))

    @defer.inlineCallbacks
    def current(self, request):
        token = request.getCookie(self.cookie)
        if not token:
            return None
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        session = yield self.store.lookup(self.kind, token)
        return session

    def check_csrf(self, request, session, fields):
        """Every state-changing request of a session carries its CSRF token."""
        check_origin(request)
        token = fields.get("csrf") or header(request, "x-csrf-token")
        if not session or not secrets_equal(token, session.csrf):
            raise HTTPError(403, "missing or wrong CSRF token")


def secrets_equal(a, b):
    import hmac

    return hmac.compare_digest(str(a).encode("utf-8", "replace"), str(b).encode("utf-8", "replace"))


def observe(app, request, started):
    code = request.code
    metrics.WEB_REQUESTS.labels(app=app, code=str(code)).inc()
    log.info("http request", app=app, method=request.method.decode("latin-1"),
             path=request.path.decode("latin-1", "replace")[:200], status=code, ip=remote_ip(request),
             ms=round((time.monotonic() - started) * 1000, 1))


__all__ = ["CSP", "HTTPError", "Sessions", "form", "json_response", "observe", "remote_ip", "render",
           "security_headers"]


MAX_BODY = 1024 * 1024  # bytes of any request to a web listener

# Content types worth compressing (RFC 9110 8.4.1 gzip content coding).
COMPRESSIBLE = {b"text/css", b"text/plain", b"application/json", b"text/javascript",
                b"application/javascript", b"image/svg+xml"}
_GZIP = server.GzipEncoderFactory()
_GZIP.compressLevel = 6


class LimitedRequest(server.Request):
    """Requests of the web listeners: a body larger than MAX_BODY (announced, or received
    in chunks) is answered 413 and the connection closed before it is read, and every
    response carries the security headers (also Klein's 404/405 pages and redirects)."""

    max_body = MAX_BODY
    _too_large = False
    _received = 0

    def _body_limit(self):
        """MAX_BODY, or what the site's root resource allows for this request's path
        (``body_limit(path, headers)``: the account pages' upload of an import, whose
        body Twisted spools to a temporary file, not memory)."""
        hook = getattr(getattr(self.channel, "site", None), "resource", None)
        hook = getattr(hook, "body_limit", None)
        path = getattr(self.channel, "_path", None)  # the request line's target, parsed by now
        if hook is None or not isinstance(path, bytes):
            return self.max_body
        try:
            larger = hook(path, self.requestHeaders)
        except Exception:
            log.failure("body limit of {path!r}", path=path[:200])
            larger = None
        return max(self.max_body, larger or 0)

    def gotLength(self, length):
        self.max_body = self._body_limit()
        if length is not None and length > self.max_body:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        self._too_large = True
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None:
            transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 18\r\nConnection: close\r\n\r\nrequest too large\n")
            transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self._too_large:
            return
        super().requestReceived(command, path, version)

    def write(self, data):
        if not self.startedWriting and self._encoder is None:
            self._maybe_compress()
        super().write(data)

    def _maybe_compress(self):
        """gzip for compressible answers when the client accepts it. Not for HTML pages
        nor answers carrying a CSRF token: secrets compressed beside text an attacker
        can inject leak through the compressed size (BREACH)."""
        if self.code != 200 or self.method == b"HEAD" or getattr(self, "moxtw_no_compress", False):
            return
        ctype = (self.responseHeaders.getRawHeaders(b"content-type") or [b""])[0].split(b";")[0].strip().lower()
        if ctype not in COMPRESSIBLE:
            return
        self.responseHeaders.addRawHeader(b"vary", b"Accept-Encoding")
        encoder = _GZIP.encoderForRequest(self)
        if encoder is not None:
            self.responseHeaders.removeHeader(b"content-length")
            self._encoder = encoder

    def process(self):
        security_headers(self)
        from urllib.parse import unquote_to_bytes

        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(b"bad request: path is not UTF-8\n")
            self.finish()
            return
        super().process()


class AppBase:
    """What the account and admin apps share (their routes stay their own): request
    handling with errors as pages or JSON, the Host check, redirects, logout.
    Subclasses set ``app_name``, ``path``, ``sessions``, ``current`` and ``clock`` and
    define ``_session(request, required)``."""

    app_name = ""

    def resource(self):
        r = self.app.resource()
        r.body_limit = self.body_limit
        return r

    def body_limit(self, path, headers):
        """Bytes of request body allowed for ``path`` beyond MAX_BODY, or None."""
        return None

    def _reactor(self):
        from moxtw.clock import default_reactor

        return default_reactor(self.clock)

    def _host_names(self):
        static, dynamic = self.current()
        names = {str(static.Hostname).lower()}
        names.update(str(lst.Hostname).lower() for lst in static.Listeners.values() if lst.Hostname)
        names.update(str(d).lower() for d in dynamic.Domains)
        return names

    def _handle(self, request, work, api=False):
        started = time.monotonic()

        async def run():
            try:
                if not host_allowed(request, self._host_names()):
                    raise HTTPError(421, "unknown host name")
                return await work()
            except HTTPError as e:
                if api:
                    return json_response(request, {"error": e.text}, e.code)
                request.setResponseCode(e.code)
                return render(request, "error.html", title="Error", message=e.text, home=self.path, base=self.path)
            except Exception:
                log.failure("web request of {app}", app=self.app_name)
                if api:
                    return json_response(request, {"error": "internal error"}, 500)
                request.setResponseCode(500)
                return render(request, "error.html", title="Error", message="internal error", home=self.path,
                              base=self.path)

        d = defer.Deferred.fromCoroutine(run())
        d.addBoth(lambda r: (observe(self.app_name, request, started), r)[1])
        return d

    def _redirect(self, request, to=None):
        request.setResponseCode(303)
        request.setHeader(b"location", (to or self.path).encode())
        security_headers(request)
        return b""

    async def _logout(self, request, required=False):
        """End the request's session (CSRF checked); the cookie is cleared."""
        session = await self._session(request, required=required)
        if session is not None:
            self.sessions.check_csrf(request, session, form(request))
            await self.sessions.store.remove(session.id)
        self.sessions.set_cookie(request, "", clear=True)
