"""``moxtw quickstart``: from an empty machine to a configured server in one command.

It checks what it can (the host name resolves to this machine, outgoing port 25, free
ports), then writes ``moxtw.toml`` and ``domains.toml`` (annotated), DKIM keys (an
ed25519 and an RSA-2048 selector, both signing), a TLS certificate for the host name
(self-signed: quickstart does not set up ACME, the operator replaces it with one from a
CA or switches the listener to ACME),
the admin password file, the account with a generated password, and a systemd unit; it
prints the passwords once, every DNS record to publish, and the commands to start. It
refuses to touch an existing configuration. Blocking; runs in the ``moxtw`` command.
"""

import errno
import json
import re
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone


from moxtw import durable
from moxtw.admin import records as rec
from moxtw.config.load import DYNAMIC_FILE, STATIC_FILE, config_test, load, toml_document, write_atomic
from moxtw.dkim.keys import generate_ed25519, generate_rsa
from moxtw.dns import normalize
from moxtw.privileges import DEFAULT_USER
from moxtw.sasl import credentials
from moxtw.smtp.address import AddressError, parse_address
from moxtw.tls.selfsigned import ensure_localserve_cert

ADMIN_PASSWORD_FILE = "adminpasswd"
UNIT_FILE = "moxtw.service"
# Port of each public service, checked for other processes before writing the config.
PUBLIC_PORTS = (("SMTP", 25), ("Submissions", 465), ("Submission", 587), ("IMAPS", 993))
INTERNAL_PORTS = (("MetricsHTTP", 8010),)
DIAL_HOSTS = ("gmail-smtp-in.l.google.com", "mx01.mail.com")


class QuickstartError(Exception):
    """Nothing was written: the arguments or the machine do not allow a quickstart."""


@dataclass
class Options:
    address: str
    config_dir: str = "config"
    hostname: str | None = None
    skipdial: bool = False
    existing_webserver: bool = False
    ips: list = field(default_factory=list)
    user: str = DEFAULT_USER


def generate_password():
    """A random password of 16 characters from the URL-safe alphabet (96 bits)."""
    return secrets.token_urlsafe(12)


def write_admin_password(config_dir, password, name=ADMIN_PASSWORD_FILE):
    """Store the admin password's derived secrets (never the password) in the config
    directory, mode 0600."""
    creds = credentials.derive(password)
    data = json.dumps(creds.to_json()).encode("utf-8") + b"\n"
    durable.write_atomic(os.path.join(config_dir, name), data, 0o600)


# -- checks --------------------------------------------------------------------------


def _resolve(hostname):
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({i[4][0] for i in infos})


def _is_local(ip):
    """Whether ``ip`` is an address of this machine: a UDP socket can bind to it."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def _port_problem(ip, port):
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"port {port} on {ip} is in use by another process: stop it first"
        if e.errno == errno.EACCES:
            return f"port {port} on {ip} cannot be checked without root"
        return f"port {port} on {ip}: {e.strerror}"
    return None


def _dial(timeout=5.0):
    for host in DIAL_HOSTS:
        try:
            with socket.create_connection((host, 25), timeout=timeout):
                return None
        except OSError as e:
            last = f"{host}:25: {e}"
    return (f"outgoing connections to port 25 fail ({last}): many providers block them for new "
            "machines; ask yours to open port 25, or configure a smarthost (Transports)")


def checks(opts, hostname, out):
    """Run the checks, print them, return the listener IPs to configure."""
    warnings = []
    resolved = _resolve(hostname)
    local = [ip for ip in resolved if _is_local(ip) and not ip.startswith("127.") and ip != "::1"]
    if opts.ips:
        ips = list(opts.ips)
        bad = [ip for ip in ips if not _is_local(ip)]
        if bad:
            raise QuickstartError(f"--ip {', '.join(bad)}: not an address of this machine")
    elif local:
        ips = local
    else:
        ips = ["0.0.0.0", "::"]
    if not resolved:
        warnings.append(f"host name {hostname} does not resolve yet: add its A/AAAA records (below)")
    elif not local:
        warnings.append(f"host name {hostname} resolves to {', '.join(resolved)}, none of them on this "
                        "machine: fix its A/AAAA records, or use --ip behind NAT and set NATIPs")
    else:
        print(f"ok: {hostname} resolves to {', '.join(local)} on this machine", file=out)
    for ip in ips:
        for _, port in PUBLIC_PORTS:
            problem = _port_problem(ip, port)
            if problem:
                warnings.append(problem)
    for _, port in INTERNAL_PORTS:
        problem = _port_problem("127.0.0.1", port)
        if problem:
            warnings.append(problem)
    if opts.skipdial:
        print("skipped: outgoing port 25 check (--skipdial)", file=out)
    else:
        problem = _dial()
        if problem:
            warnings.append(problem)
        else:
            print("ok: outgoing connections to port 25 work", file=out)
    for w in warnings:
        print(f"warning: {w}", file=out)
    return ips


# -- files ---------------------------------------------------------------------------


def _document(comment, data, notes=()):
    """The annotated file, with a comment line before each key named in ``notes``."""
    text = toml_document(comment, data)
    for key, note in notes:
        text = text.replace(f"\n{key}", f"\n# {note}\n{key}", 1)
    return text


def static_config(hostname, ips, account, cert_name, existing_webserver):
    tls = {"KeyCerts": [{"CertFile": f"../data/tls/{cert_name}.crt", "KeyFile": f"../data/tls/{cert_name}.key"}]}
    public = {
        "IPs": ips,
        "TLS": tls,
        "SMTP": {"Enabled": True},
        "Submission": {"Enabled": True},
        "Submissions": {"Enabled": True},
        "IMAPS": {"Enabled": True},
    }
    internal = {
        "IPs": ["127.0.0.1", "::1"],
        "Hostname": "localhost",
        "MetricsHTTP": {"Enabled": True},
        # The account and admin pages, on this machine only (as mox's quickstart): reach
        # them through an SSH tunnel, e.g. ssh -L 8080:localhost:80 this-host.
        "AccountHTTP": {"Enabled": True},
        "AdminHTTP": {"Enabled": True},
    }
    return {
        "AdminPasswordFile": ADMIN_PASSWORD_FILE,
        "DataDir": "../data",
        "LogLevel": "info",
        "User": DEFAULT_USER,
        "Hostname": hostname,
        "Listeners": {"public": public, "internal": internal},
        "Postmaster": {"Account": account, "Mailbox": "Postmaster"},
        "HostTLSRPT": {"Account": account, "Mailbox": "TLSRPT", "Localpart": "tlsreports"},
    }


def dynamic_config(domain, address, account, selectors):
    return {
        "Domains": {
            domain: {
                "LocalpartCatchallSeparator": "+",
                "DKIM": {
                    "Selectors": {name: {"PrivateKeyFile": path, "Expiration": "72h"} for name, path in selectors},
                    "Sign": [name for name, _ in selectors],
                },
                "DMARC": {"Localpart": "dmarcreports", "Account": account, "Mailbox": "DMARC"},
                "TLSRPT": {"Localpart": "tlsreports", "Account": account, "Mailbox": "TLSRPT"},
            }
        },
        "Accounts": {account: {
            "Domain": domain, "Destinations": {address: {}},
            # Junk filtering as mox's quickstart sets it up: refused junk kept in Rejects
            # for 14 days, moves between mailboxes train the filter.
            "RejectsMailbox": "Rejects",
            "AutomaticJunkFlags": {
                "Enabled": True,
                "JunkMailboxRegexp": "^(junk|spam)",
                "NeutralMailboxRegexp": "^(inbox|neutral|postmaster|dmarc|tlsrpt|rejects)",
            },
            "JunkFilter": {"Threshold": 0.95, "Onegrams": True, "Twograms": True, "MaxPower": 0.01,
                           "TopWords": 10, "IgnoreWords": 0.1, "RareWords": 2},
        }},
    }


def systemd_unit(config_dir, data_dir):
    """A unit that runs the server in the foreground as root long enough to bind the
    ports, after which it runs as User (moxtw.privileges)."""
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    twistd = os.path.join(bindir, "twistd")
    return f"""[Unit]
Description=moxtw mail server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
WorkingDirectory={data_dir}
# Started as root to bind ports 25, 465, 587 and 993; the server then gives the data
# directory to the User of moxtw.toml ({DEFAULT_USER}) and switches to it.
ExecStart={twistd} -n --pidfile= --logger=moxtw.log.twistd_observer moxtw serve --config {config_dir}
Restart=on-failure
RestartSec=5s
LimitNOFILE=65536
NoNewPrivileges=true
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome=read-only
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=true
LockPersonality=true
RestrictRealtime=true
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def _ensure_user(name, data_dir, out):
    try:
        pwd.getpwnam(name)
        print(f"ok: user {name} exists", file=out)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        print(f"warning: no useradd: create user {name} yourself before starting", file=out)
        return
    subprocess.run([useradd, "--system", "--home-dir", data_dir, "--no-create-home",
                    "--shell", "/usr/sbin/nologin", name], check=True)
    print(f"created system user {name}", file=out)


def run(opts, out=sys.stdout, set_password=None):
    """Do the quickstart; returns the config directory. ``set_password(config_dir,
    account, password)`` stores the account's password (the command line passes one that
    opens the store). QuickstartError when nothing could be written."""
    try:
        addr = parse_address(opts.address)
    except AddressError as e:
        raise QuickstartError(f"{opts.address!r}: {e}") from None
    # The localpart names the account (the store's rule for account names), and "+" is
    # the catchall separator the domain gets.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", addr.localpart) or ".." in addr.localpart \
            or addr.localpart.endswith("."):
        raise QuickstartError(f"{opts.address!r}: the localpart names the account: use letters, digits, '.', "
                              "'_' and '-' (no '+', the domain's catchall separator), like you@example.com")
    domain = addr.domain.unicode
    account = addr.localpart.lower()
    address = f"{addr.localpart}@{domain}"
    hostname = opts.hostname
    if hostname is None:
        fqdn = socket.getfqdn()
        hostname = fqdn if "." in fqdn and fqdn != "localhost" and not fqdn.startswith("localhost.") \
            else f"mail.{domain}"
    try:
        hostname = normalize(hostname)
    except Exception:
        raise QuickstartError(f"invalid host name {opts.hostname!r}") from None
    if "." not in hostname:
        raise QuickstartError(f"host name {hostname!r} must be a full name like mail.{domain}")

    config_dir = os.path.abspath(opts.config_dir)
    for name in (STATIC_FILE, DYNAMIC_FILE, ADMIN_PASSWORD_FILE, UNIT_FILE):
        if os.path.exists(os.path.join(config_dir, name)):
            raise QuickstartError(f"{os.path.join(config_dir, name)} exists: quickstart does not overwrite "
                                  "a configuration; use another --config directory or remove it")
    data_dir = os.path.normpath(os.path.join(config_dir, "..", "data"))

    created = []
    try:
        return _write(opts, out, set_password, config_dir, data_dir, domain, account, address, hostname, created)
    except BaseException:
        # Nothing half-written stays: a re-run starts afresh.
        for path in reversed(created):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
        raise


def _write(opts, out, set_password, config_dir, data_dir, domain, account, address, hostname, created):
    print(f"moxtw quickstart for {address}, host name {hostname}", file=out)
    if opts.existing_webserver:
        print("note: --existing-webserver has no effect: the config has no public web listeners "
              "(the account and admin pages listen on localhost only)", file=out)
    ips = checks(opts, hostname, out)

    for d in (config_dir, data_dir):
        if not os.path.exists(d):
            created.append(d)
    os.makedirs(config_dir, exist_ok=True)
    if not os.path.exists(os.path.join(config_dir, "dkim")):
        created.append(os.path.join(config_dir, "dkim"))
    for name in (STATIC_FILE, DYNAMIC_FILE, ADMIN_PASSWORD_FILE, UNIT_FILE):
        if not os.path.exists(os.path.join(config_dir, name)):
            created.append(os.path.join(config_dir, name))
    durable.make_dirs(os.path.join(config_dir, "dkim"))
    year = datetime.now(timezone.utc).year
    selectors = []
    for suffix, kind, pem in (("a", "ed25519", generate_ed25519()), ("b", "rsa2048", generate_rsa(2048))):
        sel = f"{year}{suffix}"
        rel = f"dkim/{sel}.{kind}.privatekey.pkcs8.pem"
        durable.write_atomic(os.path.join(config_dir, rel), pem, 0o600)
        selectors.append((sel, rel))
    cert_name = hostname
    ensure_localserve_cert(os.path.join(data_dir, "tls"), hostnames=[hostname], ips=[], leaf_name=cert_name)

    admin_password = generate_password()
    write_admin_password(config_dir, admin_password)
    static = static_config(hostname, ips, account, cert_name, opts.existing_webserver)
    write_atomic(os.path.join(config_dir, STATIC_FILE), _document(
        f"moxtw.toml written by moxtw quickstart for {address}.\n"
        "Static settings, read when the server starts. Every field is described by\n"
        "'moxtw config describe-static'.", static,
        notes=(("[[Listeners.public.TLS.KeyCerts]]", "Self-signed: put a certificate from a CA (e.g. certbot) at these "
                "paths and restart, or use ACME instead (README, \"ACME\")."),
               ("AdminPasswordFile", "The admin web pages' password ('moxtw setadminpassword' changes it)."))))
    write_atomic(os.path.join(config_dir, DYNAMIC_FILE), _document(
        f"domains.toml written by moxtw quickstart for {address}.\n"
        "Domains and accounts; reloaded while the server runs. Every field is described by\n"
        "'moxtw config describe-dynamic'; 'moxtw config account|address|domain|alias' change it.",
        dynamic_config(domain, address, account, selectors)))
    problems = config_test(config_dir)
    if problems:
        raise QuickstartError("the written configuration does not pass 'moxtw config test' (a bug): "
                              + "; ".join(problems))
    account_password = generate_password()
    if set_password is not None:
        set_password(config_dir, account, account_password)
    unit = systemd_unit(config_dir, data_dir)
    unit_path = os.path.join(config_dir, UNIT_FILE)
    write_atomic(unit_path, unit)

    if os.getuid() == 0:
        _ensure_user(opts.user, data_dir, out)

    cfg = load(config_dir)
    host_recs = rec.host_records(cfg.static, cfg.path, ips=[ip for ip in ips if ip not in ("0.0.0.0", "::")])
    dom_recs, pending = rec.domain_records(cfg.static, cfg.dynamic, cfg.path, domain,
                                           ips=[ip for ip in ips if ip not in ("0.0.0.0", "::")])
    print(f"""
Configuration written to {config_dir}, data directory {data_dir}.

Account {account} with address {address}, password (shown only now):

    {account_password}

Admin password (for the admin web pages at http://localhost/admin/ on this machine; shown
only now):

    {admin_password}

Email clients: IMAP over TLS on {hostname}:993, submission on {hostname}:465 (TLS) or
587 (STARTTLS), user name {address}.

TLS: the certificate is self-signed ({os.path.join(data_dir, 'tls', cert_name + '.crt')}).
Email clients will warn about it; replace it and its key with a certificate from a CA,
then restart, or switch the listener to ACME (README, "ACME").

DNS records to add for the host (reverse DNS is set at your hosting provider):
""", file=out)
    out.write(rec.zone_text(host_recs))
    print(f"\nDNS records to add for {domain}:\n", file=out)
    out.write(rec.zone_text(dom_recs, pending))
    if not [ip for ip in ips if ip not in ("0.0.0.0", "::")]:
        print("\n(The host name's IPs were unknown: add A/AAAA records and ip4:/ip6: to SPF yourself.)", file=out)
    print(f"""
Check them once published: moxtw config dnscheck --config {config_dir} {domain}

To run moxtw under systemd (the unit is {unit_path}):

    cp {unit_path} /etc/systemd/system/{UNIT_FILE}
    systemctl daemon-reload
    systemctl enable --now moxtw

or in the foreground: twistd -n --pidfile= moxtw serve --config {config_dir}
""", file=out)
    return config_dir
