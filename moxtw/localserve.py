"""localserve: a ready mail server on loopback for developers testing their app's email.

Like ``mox localserve``: config and data under one directory, standard ports plus an
offset (SMTP 1025, submission 1587, submissions 1465, IMAP 1143, IMAPS 1993, HTTP 1080,
HTTPS 1443, metrics 9010), one account ``mox`` (password ``moxmoxmox``) that receives
mail for every address at ``localhost``, a self-signed certificate made at first start,
and pedantic mode on.

``moxtw.toml`` is rewritten from the command-line options at each start; ``domains.toml``
is created once and then left to the developer to edit (it reloads on change).
"""

import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from moxtw import app
from moxtw import config as mconfig
from moxtw import durable, unavailable
from moxtw.tls import selfsigned

log = Logger(namespace="moxtw.localserve")

ACCOUNT = "mox"
ADDRESS = "mox@localhost"
PASSWORD = "moxmoxmox"
ADMIN_PASSWORD = "moxadmin"  # of the admin pages, as mox's localserve

_NOTES = {
    "SMTP": "incoming mail, no authentication",
    "Submission": "AUTH also without TLS, for applications under test",
    "Submissions": "AUTH",
    "IMAP": "LOGIN also without TLS",
    "IMAPS": "",
}

RULES = """\
  test addresses (any domain): a recipient localpart ending in
    temperror -> 451, permerror -> 550, a code like 421 or 554 -> that code,
    timeout -> no reply for an hour;
    the error comes after DATA, or at MAIL/RCPT when the localpart starts with
    mailfrom / rcptto (e.g. rcptto-permerror@localhost);
    a localpart starting with queue is accepted, then its delivery from the queue fails
    and a DSN comes back.
  submitted mail to any address is delivered to account mox, never to the internet.
"""


def prepare(dir, ip="127.0.0.1", port_offset=1000):
    """Write config and certificate under ``dir``; return the loaded Config."""
    dir = os.path.abspath(dir)
    durable.make_dirs(dir)
    static_path = os.path.join(dir, "config", "moxtw.toml")
    if os.path.exists(static_path):
        os.unlink(static_path)  # derived from the options, rewritten every start
    config_dir = mconfig.write_localserve_config(dir, ip=ip, port_offset=port_offset)
    cfg = mconfig.load(config_dir)
    hostnames = ["localhost"]
    ips = sorted({"127.0.0.1", "::1", ip} - {"0.0.0.0", "::"})
    selfsigned.ensure_localserve_cert(os.path.join(cfg.data_dir, "tls"), hostnames=hostnames, ips=ips)
    if not os.path.exists(cfg.path(cfg.static.AdminPasswordFile)):
        from moxtw.admin.quickstart import write_admin_password

        write_admin_password(cfg.config_dir, ADMIN_PASSWORD, name=cfg.static.AdminPasswordFile)
    problems = mconfig.check_files(cfg)
    if problems:
        raise mconfig.ConfigError(problems)
    return cfg


class LocalserveSetup(service.Service):
    """Sets the account password on first start and prints what listens where."""

    name = "localserve"

    def __init__(self, root, out=None):
        self.root = root
        self.out = out or sys.stdout
        self.ready = None

    def startService(self):
        super().startService()
        self.ready = self._setup()
        self.ready.addErrback(lambda f: log.failure("localserve setup", f))

    @defer.inlineCallbacks
    def _setup(self):
        acc = yield self.root.store.open_account(ACCOUNT)
        creds = yield acc.credentials()
        if creds is None:
            yield acc.set_password(PASSWORD)
        self.out.write(banner(self.root))
        self.out.flush()


def banner(root):
    cfg = root.config
    lines = [
        "moxtw localserve: a mail server for testing, on this machine only (pedantic mode)",
        f"  config: {cfg.config_dir}",
        f"  data:   {cfg.data_dir}",
        f"  account {ACCOUNT}: address {ADDRESS}, password {PASSWORD};"
        " mail to any address is accepted into it",
        f"  TLS: self-signed certificate, CA at {os.path.join(cfg.data_dir, 'tls', 'ca.crt')}",
        "  listening:",
    ]
    for svc in root.listeners:
        spec = svc.spec
        port = svc.port.getHost().port if svc.port is not None else spec.port
        what = "+".join(spec.kinds)
        tls = "TLS" if spec.tls else "plain"
        note = _NOTES.get(spec.kinds[0])
        if note is None and {"AccountHTTP", "AccountHTTPS"} & set(spec.kinds):
            scheme = "https" if spec.tls else "http"
            note = (f"account pages {scheme}://localhost:{port}/, admin pages {scheme}://localhost:{port}/admin/"
                    f" (admin password {ADMIN_PASSWORD}); webmail and webapi not built yet")
        if note is None and spec.kinds != ["MetricsHTTP"]:
            note = unavailable.WEB_TEXT if "MetricsHTTP" not in spec.kinds else None
        if spec.kinds == ["MetricsHTTP"]:
            note = f"http://{_host(spec.ip)}:{port}/metrics"
        lines.append(f"    {spec.ip}:{port:<6} {tls:5} {what}" + (f"  ({note})" if note else ""))
    return "\n".join(lines) + "\n" + RULES


def _host(ip):
    return f"[{ip}]" if ":" in ip else ip


def makeService(dir, ip="127.0.0.1", port_offset=1000, reactor=None, out=None):
    """The localserve service tree: ``moxtw.app.makeService`` plus first-start setup."""
    cfg = prepare(dir, ip, port_offset)
    root = app.makeService(cfg, reactor=reactor, localserve=True)
    root.localserve = LocalserveSetup(root, out=out)
    root.localserve.setServiceParent(root)
    return root
