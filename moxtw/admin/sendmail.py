"""``moxtw sendmail``: a sendmail-compatible command for cron jobs and scripts. The
message (standard input) is submitted to the local server's submission listener with the
credentials of a small TOML file, as mox's moxsubmit.conf does:

    # /etc/moxtw/submit.toml (or $MOXTW_SUBMIT_CONFIG, or ~/.config/moxtw/submit.toml)
    Host = "127.0.0.1"
    Port = 465              # 465: TLS; 587: STARTTLS; anything else with TLS = "none"
    TLS = "tls"             # "tls", "starttls" or "none" (only to loopback)
    CAFile = ""             # CA certificate for a self-signed server certificate
    ServerName = ""         # name the certificate is checked for (default: Host)
    Username = "cron@example.com"
    Password = "..."
    From = "cron@example.com"   # default sender when -f is not given

Options as sendmail's: recipients as arguments, ``-t`` (recipients from To/Cc/Bcc; Bcc
removed), ``-f sender``, ``-F name``, ``-i``/``-oi`` (a line with a single dot does not
end the message); other ``-o``/``-b``/``-B`` options are accepted and ignored. Exit status
as sysexits.h: 64 usage, 65 refused data, 69 server unavailable, 75 temporary failure,
78 configuration.
"""

import email.utils
import os
import smtplib
import socket
import ssl
import sys
import tomllib

EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 64, 65, 69, 75, 78
CONFIG_PATHS = ("/etc/moxtw/submit.toml", "~/.config/moxtw/submit.toml")
MAX_MESSAGE = 100 * 1024 * 1024


class SendmailError(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


def config_path():
    env = os.environ.get("MOXTW_SUBMIT_CONFIG")
    if env:
        return env
    for p in reversed(CONFIG_PATHS):
        full = os.path.expanduser(p)
        if os.path.exists(full):
            return full
    return CONFIG_PATHS[0]


def load_config(path):
    try:
        with open(path, "rb") as f:
            conf = tomllib.load(f)
    except FileNotFoundError:
        raise SendmailError(EX_CONFIG, f"no submission config {path} (see 'moxtw sendmail --help')") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SendmailError(EX_CONFIG, f"{path}: {e}") from None
    known = {"Host", "Port", "TLS", "CAFile", "ServerName", "Username", "Password", "From"}
    unknown = set(conf) - known
    if unknown:
        raise SendmailError(EX_CONFIG, f"{path}: unknown keys {', '.join(sorted(unknown))}")
    conf.setdefault("Host", "127.0.0.1")
    conf.setdefault("Port", 465)
    conf.setdefault("TLS", "tls" if conf["Port"] == 465 else "starttls")
    if conf["TLS"] not in ("tls", "starttls", "none"):
        raise SendmailError(EX_CONFIG, f"{path}: TLS must be tls, starttls or none")
    for key in ("Username", "Password"):
        if not isinstance(conf.get(key), str) or not conf[key]:
            raise SendmailError(EX_CONFIG, f"{path}: {key} is required")
    if conf["TLS"] == "none" and not _loopback(conf["Host"]):
        raise SendmailError(EX_CONFIG, f"{path}: TLS = \"none\" only to a loopback address, the password "
                            "would cross the network in the clear")
    return conf


def _loopback(host):
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def parse_args(argv):
    """(options dict, recipients) from sendmail's command line."""
    opts = {"t": False, "i": False, "f": None, "F": None}
    rcpts = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--":
            rcpts.extend(args)
            break
        if not a.startswith("-") or a == "-":
            rcpts.append(a)
            continue
        if a in ("-t",):
            opts["t"] = True
        elif a in ("-i", "-oi"):
            opts["i"] = True
        elif a[:2] in ("-f", "-r", "-F"):
            key = "F" if a[:2] == "-F" else "f"
            value = a[2:] or (args.pop(0) if args else None)
            if value is None:
                raise SendmailError(EX_USAGE, f"{a} needs a value")
            opts[key] = value
        elif a[:2] in ("-o", "-b", "-B", "-O", "-q", "-v", "-n", "-m", "-e", "-U", "-h", "-N", "-R", "-V", "-X"):
            # Queue/delivery-mode options of sendmail: meaningless here. -N/-R/-V/-X take
            # a value.
            if a in ("-N", "-R", "-V", "-X", "-B", "-h") and args:
                args.pop(0)
            if a.startswith("-bs") or a.startswith("-bd") or a.startswith("-bp"):
                raise SendmailError(EX_USAGE, f"{a}: not supported (moxtw sendmail only submits a message)")
        else:
            raise SendmailError(EX_USAGE, f"unknown option {a}")
    return opts, rcpts


def read_message(stream, dot_ends):
    data = bytearray()
    for line in stream:
        if dot_ends and line.rstrip(b"\r\n") == b".":
            break
        data += line
        if len(data) > MAX_MESSAGE:
            raise SendmailError(EX_DATAERR, f"message larger than {MAX_MESSAGE} bytes")
    return bytes(data)


def _split(data):
    """(header bytes with its final newline, body) of a message."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[: i + len(sep) // 2], data[i + len(sep):]
    return data if data.endswith(b"\n") else data + b"\n", b""


def header_recipients(head):
    """Addresses of To, Cc and Bcc, and the header without Bcc (for -t)."""
    import email.parser

    msg = email.parser.BytesHeaderParser().parsebytes(head + b"\n")
    values = []
    for name in ("to", "cc", "bcc"):
        values.extend(msg.get_all(name) or [])
    addrs = [a for _, a in email.utils.getaddresses([str(v) for v in values]) if a]
    lines, out, skipping = head.split(b"\n"), [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line[:4].lower() == b"bcc:"
        if not skipping:
            out.append(line)
    return addrs, b"\n".join(out)


def prepare(data, opts, rcpts, conf):
    """(sender, recipients, message) to submit."""
    head, body = _split(data)
    if opts["t"]:
        more, head = header_recipients(head)
        rcpts = rcpts + more
    if not rcpts:
        raise SendmailError(EX_USAGE, "no recipients (give them as arguments, or -t)")
    sender = opts["f"] or conf.get("From") or conf["Username"]
    if not any(line[:5].lower() == b"from:" for line in head.split(b"\n")):
        name = opts["F"]
        value = email.utils.formataddr((name, sender)) if name else sender
        head = f"From: {value}\n".encode() + head
    msg = head + (b"\n" if not head.endswith(b"\n\n") and not head.endswith(b"\r\n\r\n") else b"") + body
    # Submission wants CRLF (RFC 5321 2.3.8); smtplib converts bare LF too, this is exact.
    msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return sender, rcpts, msg


class _SMTPS(smtplib.SMTP_SSL):
    """SMTP over TLS checking the certificate for ``server_name``, not the host dialed."""

    def __init__(self, server_name, *args, **kwargs):
        self._server_name = server_name
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self._server_name)


def submit(conf, sender, rcpts, msg, timeout=60):
    host, port = conf["Host"], int(conf["Port"])
    server_name = conf.get("ServerName") or host
    ctx = ssl.create_default_context(cafile=conf.get("CAFile") or None)
    try:
        if conf["TLS"] == "tls":
            client = _SMTPS(server_name, host, port, context=ctx, timeout=timeout)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
    except (ConnectionRefusedError, socket.timeout, OSError) as e:
        raise SendmailError(EX_UNAVAILABLE, f"cannot reach the moxtw submission listener at {host}:{port} "
                            f"({e}): is the server running?") from None
    try:
        with client as s:
            s.ehlo(socket.gethostname() or "localhost")
            if conf["TLS"] == "starttls":
                s._host = server_name  # the name starttls() checks the certificate for
                s.starttls(context=ctx)
                s.ehlo(socket.gethostname() or "localhost")
            s.login(conf["Username"], conf["Password"])
            # Non-ASCII addresses need SMTPUTF8 (RFC 6531 3.4), which moxtw offers.
            utf8 = not all(a.isascii() for a in [sender, *rcpts])
            refused = s.sendmail(sender, rcpts, msg, mail_options=["SMTPUTF8"] if utf8 else [])
    except smtplib.SMTPAuthenticationError as e:
        raise SendmailError(EX_CONFIG, f"login as {conf['Username']} refused: {e.smtp_error.decode(errors='replace')}")
    except smtplib.SMTPRecipientsRefused as e:
        codes = [c for c, _ in e.recipients.values()]
        status = EX_TEMPFAIL if all(400 <= c < 500 for c in codes) else EX_DATAERR
        raise SendmailError(status, "recipients refused: " + "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in e.recipients.items()))
    except smtplib.SMTPResponseException as e:
        status = EX_TEMPFAIL if 400 <= e.smtp_code < 500 else EX_DATAERR
        raise SendmailError(status, f"refused: {e.smtp_code} {e.smtp_error.decode(errors='replace')}")
    except smtplib.SMTPNotSupportedError as e:
        raise SendmailError(EX_DATAERR, f"refused: {e}")
    except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
        raise SendmailError(EX_TEMPFAIL, f"submission failed: {e}")
    return refused


def main(argv, stdin=None, stderr=None):
    stdin = stdin or sys.stdin.buffer
    stderr = stderr or sys.stderr
    try:
        opts, rcpts = parse_args(argv)
        conf = load_config(config_path())
        data = read_message(stdin, dot_ends=not opts["i"])
        sender, rcpts, msg = prepare(data, opts, rcpts, conf)
        refused = submit(conf, sender, rcpts, msg)
    except SendmailError as e:
        print(f"moxtw sendmail: {e}", file=stderr)
        return e.status
    for r, (code, text) in (refused or {}).items():
        print(f"moxtw sendmail: {r}: refused: {code} {text.decode(errors='replace')}", file=stderr)
    return EX_DATAERR if refused else 0
