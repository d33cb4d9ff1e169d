"""Configuration for a local testing instance, like ``mox localserve``.

`write_localserve_config(dir)` creates dir/config/moxtw.toml and dir/config/domains.toml
(keeping existing files, so a developer's edits survive) for a server on 127.0.0.1 with the
standard ports plus an offset (SMTP 1025, submission 1587, IMAP 1143, HTTP 1080, ...),
pedantic protocol checks, the domain "localhost", and one account "mox" that receives email
for every address at localhost.

The TLS certificate named in the config (data/tls/localhost.crt and .key) is created by the
TLS module at first start; loading the config does not require the files to exist
(`moxtw.config.check_files` reports missing files separately).
"""

import os

from moxtw.config.load import DYNAMIC_FILE, STATIC_FILE, toml_document, write_atomic

#: Standard port of each service, before the localserve offset is added.
STANDARD_PORTS = {
    "SMTP": 25,
    "Submission": 587,
    "Submissions": 465,
    "IMAP": 143,
    "IMAPS": 993,
    "HTTP": 80,
    "HTTPS": 443,
    "Metrics": 8010,
}

ACCOUNT = "mox"
DOMAIN = "localhost"


def localserve_ports(port_offset: int = 1000) -> dict[str, int]:
    """Port of each localserve service: the standard port plus port_offset."""
    ports = {name: port + port_offset for name, port in STANDARD_PORTS.items()}
    bad = [f"{name} {port}" for name, port in ports.items() if not 1 <= port <= 65535]
    if bad:
        raise ValueError(f"port offset {port_offset} gives invalid ports: {', '.join(bad)}")
    return ports


def localserve_static(ip: str = "127.0.0.1", port_offset: int = 1000) -> dict:
    """The moxtw.toml settings of localserve, as a dict."""
    p = localserve_ports(port_offset)

    def web(port: int, path: str) -> dict:
        return {"Enabled": True, "Port": port, "Path": path}

    return {
        "AdminPasswordFile": "adminpasswd",
        "DataDir": "../data",
        "LogLevel": "debug",
        "Hostname": "localhost",
        "Pedantic": True,
        "Listeners": {
            "localhost": {
                "IPs": [ip],
                "TLS": {
                    "KeyCerts": [
                        {
                            "CertFile": "../data/tls/localhost.crt",
                            "KeyFile": "../data/tls/localhost.key",
                        }
                    ]
                },
                "SMTP": {"Enabled": True, "Port": p["SMTP"]},
                "Submission": {
                    "Enabled": True,
                    "Port": p["Submission"],
                    "NoRequireSTARTTLS": True,
                },
                "Submissions": {"Enabled": True, "Port": p["Submissions"]},
                "IMAP": {"Enabled": True, "Port": p["IMAP"], "NoRequireSTARTTLS": True},
                "IMAPS": {"Enabled": True, "Port": p["IMAPS"]},
                "AccountHTTP": web(p["HTTP"], "/"),
                "AccountHTTPS": web(p["HTTPS"], "/"),
                "AdminHTTP": web(p["HTTP"], "/admin/"),
                "AdminHTTPS": web(p["HTTPS"], "/admin/"),
                "WebmailHTTP": web(p["HTTP"], "/webmail/"),
                "WebmailHTTPS": web(p["HTTPS"], "/webmail/"),
                "WebAPIHTTP": web(p["HTTP"], "/webapi/"),
                "WebAPIHTTPS": web(p["HTTPS"], "/webapi/"),
                "MetricsHTTP": {"Enabled": True, "Port": p["Metrics"]},
            }
        },
        "Postmaster": {"Account": ACCOUNT, "Mailbox": "Inbox"},
    }


def localserve_dynamic() -> dict:
    """The domains.toml settings of localserve, as a dict."""
    return {
        "Domains": {DOMAIN: {"LocalpartCatchallSeparator": "+"}},
        "Accounts": {
            ACCOUNT: {
                "Domain": DOMAIN,
                "Destinations": {
                    f"{ACCOUNT}@{DOMAIN}": {},
                    # Catchall: every other address at localhost is delivered here too.
                    f"@{DOMAIN}": {},
                },
                # No RejectsMailbox until the junk filter keeps rejects: it would only
                # print a "has no effect" warning at every start.
            }
        },
    }


def write_localserve_config(dir: str, ip: str = "127.0.0.1", port_offset: int = 1000) -> str:
    """Create dir/config/{moxtw,domains}.toml for localserve if absent; return the config
    directory. Existing files are left alone."""
    config_dir = os.path.join(dir, "config")
    os.makedirs(config_dir, exist_ok=True)
    files = (
        (
            STATIC_FILE,
            "moxtw.toml for a local testing instance (moxtw localserve). Edits are kept.\n"
            "All fields are documented in conf/moxtw.toml of the moxtw source.",
            localserve_static(ip, port_offset),
        ),
        (
            DYNAMIC_FILE,
            "domains.toml for a local testing instance (moxtw localserve). Edits are kept and\n"
            "reloaded while running. All fields are documented in conf/domains.toml.\n"
            'Account "mox" receives email for every address at localhost (the catchall\n'
            'destination "@localhost").',
            localserve_dynamic(),
        ),
    )
    for name, comment, data in files:
        path = os.path.join(config_dir, name)
        if not os.path.exists(path):
            write_atomic(path, toml_document(comment, data))
    return config_dir
