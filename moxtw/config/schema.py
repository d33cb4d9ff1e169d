"""Typed schema of the two configuration files, as pydantic models.

`Static` is moxtw.toml (read once at start), `Dynamic` is domains.toml (reloaded when it
changes). Attribute names are the TOML keys, which follow mox's config (config/config.go), so
code reads ``static.Listeners["public"].SMTP.Port`` and mox's documentation maps over.

Every field carries its description; `moxtw.config.describe` turns the schema into the
annotated example files in conf/. Checks that involve one model live here as validators;
checks across the whole configuration (references between accounts, domains, transports)
live in `moxtw.config.load`.
"""

from datetime import timedelta
from typing import Annotated, Any, Callable, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticUndefined

from moxtw.config import types as t
from moxtw.config.types import (
    HTTPURL,
    DestinationAddress,
    DomainName,
    Duration,
    EmailAddress,
    HostPort,
    IPAddress,
    MXPattern,
    Regexp,
    RouteDomain,
    TLSVersion,
    URLPath,
    Choice,
    parse_destination,
    parse_domain,
)

#: Default maximum message size for SMTP, per listener (mox: DefaultMaxMsgSize).
DEFAULT_MAX_MESSAGE_SIZE = 100 * 1024 * 1024


def field(
    description: str,
    default: Any = PydanticUndefined,
    *,
    factory: Optional[Callable[[], Any]] = None,
    example: Any = PydanticUndefined,
    key_example: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """A pydantic Field with a description and, for describe, an example value.

    `example` is used when the annotated example shows a field that has no default;
    `key_example` names the sample key shown for a table of tables.
    """
    extra: dict[str, Any] = {}
    if example is not PydanticUndefined:
        extra["example"] = example
    if key_example is not None:
        extra["key_example"] = key_example
    if factory is not None:
        return Field(
            default_factory=factory, description=description, json_schema_extra=extra, **kwargs
        )
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class Model(BaseModel):
    """Base of all config models: unknown keys are errors, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


def unique_keys(normalize: Callable[[str], Any], what: str) -> BeforeValidator:
    """Refuse a table whose keys collide after normalisation (e.g. case or IDNA forms)."""

    def check(value: Any) -> Any:
        if isinstance(value, dict):
            seen: dict[Any, str] = {}
            for key in value:
                try:
                    norm = normalize(key)
                except ValueError:
                    continue  # The key type reports it.
                if norm in seen:
                    raise ValueError(f"{what} {key!r} is the same as {seen[norm]!r}")
                seen[norm] = key
        return value

    return BeforeValidator(check)


# --- Static configuration (moxtw.toml) ---------------------------------------------------


class TLSCA(Model):
    AdditionalToSystem: bool = field(
        "If true, the certificates in CertFiles are trusted in addition to the system's "
        "certificate authorities; otherwise only CertFiles are trusted.",
        False,
    )
    CertFiles: list[str] = field(
        "PEM files with CA certificates to trust, relative to the config directory.",
        factory=list,
        example=["ca.pem"],
    )


class GlobalTLS(Model):
    CA: Optional[TLSCA] = field(
        "Additional or replacement certificate authorities, e.g. for a private CA.", None
    )


class ExternalAccountBindingConfig(Model):
    KeyID: str = field("Key identifier given by the ACME provider.", example="keyid123")
    KeyFile: str = field(
        "File with the base64url-encoded key that signs the account request, relative to "
        "the config directory.",
        example="acme-eab.key",
    )


class ACMEConfig(Model):
    DirectoryURL: HTTPURL = field(
        "ACME directory URL; for Let's Encrypt: "
        "https://acme-v02.api.letsencrypt.org/directory.",
        example="https://acme-v02.api.letsencrypt.org/directory",
    )
    RenewBefore: Duration = field(
        "How long before a certificate expires it is renewed.", timedelta(days=30)
    )
    ContactEmail: EmailAddress = field(
        "Address registered with the ACME provider, which may send notices about expiring "
        "certificates. Prefer an address not handled by this server.",
        example="admin@example.net",
    )
    Port: t.Port = field(
        "Port for TLS-ALPN validation. The ACME provider always connects to 443; only change "
        "this when port 443 is forwarded here by other means.",
        443,
    )
    IssuerDomainName: Optional[DomainName] = field(
        "Domain of the certificate authority, used in suggested CAA DNS records. Set "
        "automatically for Let's Encrypt.",
        None,
        example="letsencrypt.org",
    )
    ExternalAccountBinding: Optional[ExternalAccountBindingConfig] = field(
        "Reference to an existing account at the ACME provider, when the provider requires it.",
        None,
    )


class KeyCert(Model):
    CertFile: str = field(
        "Certificate chain (leaf first, then intermediates) in PEM format, relative to the "
        "config directory.",
        example="mail.example.org.crt",
    )
    KeyFile: str = field(
        "Private key for the certificate in PEM format (PKCS#8, PKCS#1 or EC), relative to "
        "the config directory.",
        example="mail.example.org.key",
    )


class ListenerTLS(Model):
    ACME: Optional[str] = field(
        "Name of an ACME provider from the top-level ACME table, for automatic certificates.",
        None,
        example="letsencrypt",
    )
    KeyCerts: list[KeyCert] = field(
        "Static certificates and keys, chosen per connection by the name the client asks "
        "for (SNI); the first serves clients that ask for none, other names are refused. "
        "Files replaced on disk are served within a minute, without restart. Mutually "
        "exclusive with ACME.", factory=list
    )
    MinVersion: TLSVersion = field("Minimum TLS version accepted.", "TLSv1.2")
    HostPrivateKeyFiles: list[str] = field(
        "Private key files for ACME certificates of the listener host name, so DANE TLSA "
        "records can be published before certificates are requested.",
        factory=list,
    )
    ClientAuthDisabled: bool = field(
        "Do not ask clients for TLS client certificates (works around clients that mishandle "
        "the request).",
        False,
    )

    @model_validator(mode="after")
    def _acme_or_keycerts(self) -> "ListenerTLS":
        if self.ACME and self.KeyCerts:
            raise ValueError("cannot have both ACME and KeyCerts")
        if not self.ACME and not self.KeyCerts:
            raise ValueError("TLS needs either ACME or KeyCerts")
        return self


class ListenerSMTP(Model):
    Enabled: bool = field("Accept incoming email over SMTP.", False)
    Port: t.Port = field("Port for SMTP.", 25)
    NoSTARTTLS: bool = field("Do not offer STARTTLS. Not recommended.", False)
    RequireSTARTTLS: bool = field(
        "Refuse incoming messages on connections without STARTTLS. Senders without TLS "
        "support cannot deliver. TLS reports are accepted regardless.",
        False,
    )
    NoRequireTLS: bool = field(
        "Do not announce the REQUIRETLS extension (RFC 8689), e.g. for mailing lists whose "
        "subscribers may not support it.",
        False,
    )
    DNSBLs: list[DomainName] = field(
        "DNS block list zones consulted for incoming messages from senders without enough "
        "reputation; a listed IP is rejected. Our own sending IPs are monitored in these too. "
        "E.g. sbl.spamhaus.org, bl.spamcop.net (check their terms of use).",
        factory=list,
    )
    FirstTimeSenderDelay: Duration = field(
        "Delay before accepting a message from a sender not seen before by the account.",
        timedelta(seconds=15),
    )
    TLSSessionTicketsDisabled: Optional[bool] = field(
        "Override whether TLS session tickets are offered; disabling can work around "
        "interoperability problems.",
        None,
    )


class ListenerSubmission(Model):
    Enabled: bool = field(
        "Accept messages from email clients over SMTP submission, upgraded with STARTTLS. "
        "Prefer Submissions.",
        False,
    )
    Port: t.Port = field("Port for submission.", 587)
    NoRequireSTARTTLS: bool = field(
        "Allow authentication and submission without STARTTLS, sending passwords in clear "
        "text. Only for connections protected otherwise, e.g. a VPN.",
        False,
    )


class ListenerSubmissions(Model):
    Enabled: bool = field(
        "Accept messages from email clients over SMTP submission on an immediate TLS "
        "connection. Requires TLS.",
        False,
    )
    Port: t.Port = field("Port for submissions.", 465)
    EnabledOnHTTPS: bool = field(
        "Also serve submission on the HTTPS port for clients asking for the 'smtp' protocol "
        "with TLS ALPN (censorship circumvention, e.g. Delta Chat).",
        False,
    )


class ListenerIMAP(Model):
    Enabled: bool = field(
        "Serve IMAP for email clients, upgraded with STARTTLS. Prefer IMAPS.", False
    )
    Port: t.Port = field("Port for IMAP.", 143)
    NoRequireSTARTTLS: bool = field(
        "Allow login without STARTTLS. Only for connections protected otherwise, e.g. a VPN.",
        False,
    )


class ListenerIMAPS(Model):
    Enabled: bool = field("Serve IMAP on an immediate TLS connection. Requires TLS.", False)
    Port: t.Port = field("Port for IMAPS.", 993)
    EnabledOnHTTPS: bool = field(
        "Also serve IMAP on the HTTPS port for clients asking for the 'imap' protocol with "
        "TLS ALPN (censorship circumvention, e.g. Delta Chat).",
        False,
    )


class WebService(Model):
    """An internal web interface: account, admin, webmail or webapi, over HTTP or HTTPS."""

    Enabled: bool = field("Serve this web interface.", False)
    Port: t.Port = field("Port to serve on.", 80)
    Path: URLPath = field(
        "Path prefix the interface is served under; should end with a slash (cookie paths).",
        "/",
    )
    Forwarded: bool = field(
        "Trust X-Forwarded-* headers for the client IP (rate limiting, logging) and the "
        "secure status of cookies; for use behind a reverse proxy.",
        False,
    )


def _web_service(name: str, port: int, path: str) -> type[WebService]:
    """A WebService subclass with the defaults of one interface."""
    cls = type(
        name,
        (WebService,),
        {
            "__annotations__": {"Port": t.Port, "Path": URLPath},
            "__doc__": WebService.__doc__,
            "__module__": __name__,
            "Port": field("Port to serve on.", port),
            "Path": field(
                "Path prefix the interface is served under; should end with a slash "
                "(cookie paths).",
                path,
            ),
        },
    )
    return cls


AccountHTTPConfig = _web_service("AccountHTTPConfig", 80, "/")
AccountHTTPSConfig = _web_service("AccountHTTPSConfig", 443, "/")
AdminHTTPConfig = _web_service("AdminHTTPConfig", 80, "/admin/")
AdminHTTPSConfig = _web_service("AdminHTTPSConfig", 443, "/admin/")
WebmailHTTPConfig = _web_service("WebmailHTTPConfig", 80, "/webmail/")
WebmailHTTPSConfig = _web_service("WebmailHTTPSConfig", 443, "/webmail/")
WebAPIHTTPConfig = _web_service("WebAPIHTTPConfig", 80, "/webapi/")
WebAPIHTTPSConfig = _web_service("WebAPIHTTPSConfig", 443, "/webapi/")


class MetricsHTTPConfig(Model):
    Enabled: bool = field("Serve Prometheus metrics at /metrics.", False)
    Port: t.Port = field("Port for metrics.", 8010)


class PprofHTTPConfig(Model):
    Enabled: bool = field("Serve profiling endpoints. Never on a public IP.", False)
    Port: t.Port = field("Port for profiling.", 8011)


class AutoconfigHTTPSConfig(Model):
    Enabled: bool = field(
        "Serve autoconfig (Thunderbird) and autodiscover (Microsoft) so email clients "
        "configure themselves. Requires TLS unless NonTLS.",
        False,
    )
    Port: t.Port = field(
        "Port to serve on. Clients connect to 443; only change this when that port is "
        "forwarded here by other means.",
        443,
    )
    NonTLS: bool = field(
        "Speak plain HTTP on Port, e.g. behind a TLS-terminating reverse proxy.", False
    )
    Forwarded: bool = field(
        "Trust X-Forwarded-* headers for the client IP (rate limiting, logging).", False
    )


class MTASTSHTTPSConfig(Model):
    Enabled: bool = field(
        "Serve MTA-STS policies (RFC 8461) at mta-sts.<domain>. Requires TLS unless NonTLS.",
        False,
    )
    Port: t.Port = field(
        "Port to serve on. Senders connect to 443; only change this when that port is "
        "forwarded here by other means.",
        443,
    )
    NonTLS: bool = field(
        "Speak plain HTTP on Port, e.g. behind a TLS-terminating reverse proxy.", False
    )
    Forwarded: bool = field(
        "Trust X-Forwarded-* headers for the client IP (rate limiting, logging).", False
    )


class WebserverHTTPConfig(Model):
    Enabled: bool = field("Serve the WebHandlers of domains.toml over plain HTTP.", False)
    Port: t.Port = field("Port for plain HTTP.", 80)
    RateLimitDisabled: bool = field("Do not rate limit requests on this port.", False)


class WebserverHTTPSConfig(Model):
    Enabled: bool = field(
        "Serve the WebHandlers of domains.toml over HTTPS. Needs ACME or certificates for "
        "each WebHandler domain.",
        False,
    )
    Port: t.Port = field("Port for HTTPS.", 443)
    RateLimitDisabled: bool = field("Do not rate limit requests on this port.", False)


_HTTPS_SERVICES = (
    "Submissions",
    "IMAPS",
    "AccountHTTPS",
    "AdminHTTPS",
    "WebmailHTTPS",
    "WebAPIHTTPS",
    "WebserverHTTPS",
)


class Listener(Model):
    IPs: list[IPAddress] = field(
        "IP addresses to listen on. 0.0.0.0 and :: mean all IPv4 and IPv6 addresses, but "
        "explicit IPs are better: outgoing connections are then made from them too.",
        example=["0.0.0.0", "::"],
        min_length=1,
    )
    NATIPs: list[IPAddress] = field(
        "Public IPs when this machine is behind NAT and IPs lists internal addresses; used by "
        "the DNS self-checks (iprev, MX, SPF, autoconfig).",
        factory=list,
    )
    Hostname: Optional[t.Hostname] = field(
        "Host name of this listener; if absent the global Hostname. Internal web interfaces "
        "answer requests to IPs, this name and localhost.",
        None,
        example="mail.example.org",
    )
    TLS: Optional[ListenerTLS] = field(
        "TLS for STARTTLS, immediate TLS and HTTPS on this listener.", None
    )
    SMTPMaxMessageSize: int = field(
        "Maximum size in bytes of incoming and outgoing messages.",
        DEFAULT_MAX_MESSAGE_SIZE,
        ge=1,
    )
    SMTP: ListenerSMTP = field("SMTP for incoming email from other servers.", factory=ListenerSMTP)
    Submission: ListenerSubmission = field(
        "SMTP submission with STARTTLS, for email clients.", factory=ListenerSubmission
    )
    Submissions: ListenerSubmissions = field(
        "SMTP submission over immediate TLS, for email clients.", factory=ListenerSubmissions
    )
    IMAP: ListenerIMAP = field("IMAP with STARTTLS, for email clients.", factory=ListenerIMAP)
    IMAPS: ListenerIMAPS = field(
        "IMAP over immediate TLS, for email clients.", factory=ListenerIMAPS
    )
    AccountHTTP: AccountHTTPConfig = field(
        "Account web interface over HTTP: users change their password, delivery rules, "
        "import and export email. Default path /.",
        factory=AccountHTTPConfig,
    )
    AccountHTTPS: AccountHTTPSConfig = field(
        "Account web interface over HTTPS. Requires TLS.", factory=AccountHTTPSConfig
    )
    AdminHTTP: AdminHTTPConfig = field(
        "Admin web interface over HTTP: domains, accounts, queue, reports. Default path "
        "/admin/. Only enable on non-public IPs, or reach it through an SSH tunnel.",
        factory=AdminHTTPConfig,
    )
    AdminHTTPS: AdminHTTPSConfig = field(
        "Admin web interface over HTTPS. Requires TLS.", factory=AdminHTTPSConfig
    )
    WebmailHTTP: WebmailHTTPConfig = field(
        "Webmail over HTTP. Default path /webmail/.", factory=WebmailHTTPConfig
    )
    WebmailHTTPS: WebmailHTTPSConfig = field(
        "Webmail over HTTPS. Requires TLS.", factory=WebmailHTTPSConfig
    )
    WebAPIHTTP: WebAPIHTTPConfig = field(
        "HTTP/JSON API for sending and handling email, over HTTP. Default path /webapi/.",
        factory=WebAPIHTTPConfig,
    )
    WebAPIHTTPS: WebAPIHTTPSConfig = field(
        "HTTP/JSON API over HTTPS. Requires TLS.", factory=WebAPIHTTPSConfig
    )
    MetricsHTTP: MetricsHTTPConfig = field(
        "Prometheus metrics over HTTP. Do not enable on a public IP.", factory=MetricsHTTPConfig
    )
    PprofHTTP: PprofHTTPConfig = field(
        "Profiling endpoints over HTTP. Never enable on a public IP.", factory=PprofHTTPConfig
    )
    AutoconfigHTTPS: AutoconfigHTTPSConfig = field(
        "Email client autoconfiguration over HTTPS.", factory=AutoconfigHTTPSConfig
    )
    MTASTSHTTPS: MTASTSHTTPSConfig = field("MTA-STS policies over HTTPS.", factory=MTASTSHTTPSConfig)
    WebserverHTTP: WebserverHTTPConfig = field(
        "The configured WebHandlers, over HTTP.", factory=WebserverHTTPConfig
    )
    WebserverHTTPS: WebserverHTTPSConfig = field(
        "The configured WebHandlers, over HTTPS.", factory=WebserverHTTPSConfig
    )

    @model_validator(mode="after")
    def _tls_when_needed(self) -> "Listener":
        if self.TLS is None:
            need = [name for name in _HTTPS_SERVICES if getattr(self, name).Enabled]
            for name in ("AutoconfigHTTPS", "MTASTSHTTPS"):
                svc = getattr(self, name)
                if svc.Enabled and not svc.NonTLS:
                    need.append(name)
            if need:
                raise ValueError("no TLS configured, but required for " + ", ".join(need))
        return self


class PostmasterConfig(Model):
    Account: str = field(
        "Account that receives email for postmaster addresses.", example="admin"
    )
    Mailbox: str = field("Mailbox in that account, e.g. Postmaster or Inbox.", example="Postmaster")


class HostTLSRPTConfig(Model):
    Account: str = field(
        "Account that receives TLS reports about this host, typically the postmaster account.",
        example="admin",
    )
    Mailbox: str = field("Mailbox for the TLS reports, e.g. TLSRPT.", example="TLSRPT")
    Localpart: t.Localpart = field(
        "Localpart at the host name that accepts TLS reports, e.g. tlsreports. ASCII only.",
        example="tlsreports",
    )


class SpecialUseMailboxes(Model):
    Sent: Optional[str] = field("Mailbox for sent messages.", None, example="Sent")
    Archive: Optional[str] = field("Mailbox for archived messages.", None, example="Archive")
    Trash: Optional[str] = field("Mailbox for deleted messages.", None, example="Trash")
    Draft: Optional[str] = field("Mailbox for drafts.", None, example="Drafts")
    Junk: Optional[str] = field("Mailbox for junk messages.", None, example="Junk")


class InitialMailboxesConfig(Model):
    SpecialUse: SpecialUseMailboxes = field(
        "Mailboxes created with a special-use role (RFC 6154), which clients recognise.",
        factory=SpecialUseMailboxes,
    )
    Regular: list[str] = field("Further mailboxes to create.", factory=list)


class SMTPAuth(Model):
    Username: str = field("User name at the remote server.", example="user@example.net")
    Password: str = field("Password at the remote server.", example="secret")
    Mechanisms: list[
        Choice(
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-1",
                "CRAM-MD5",
                "PLAIN",
            )
    ] = field(
        "Allowed SASL mechanisms; the strongest one the server offers is used. If empty: "
        "SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN "
        "(PLAIN only over TLS). List only the strongest the server supports to prevent "
        "downgrades.",
        factory=list,
    )


class TransportSMTP(Model):
    Host: t.Hostname = field(
        "Host to connect to, also the name verified in its TLS certificate.",
        example="smtp.example.net",
    )
    Port: Optional[t.Port] = field(
        "Port to connect to; if absent 465 for Submissions, 587 for Submission, 25 for SMTP.",
        None,
        example=465,
    )
    STARTTLSInsecureSkipVerify: bool = field(
        "Accept an unverifiable certificate after STARTTLS.", False
    )
    NoSTARTTLS: bool = field(
        "Do not use STARTTLS: credentials and messages travel in clear text.", False
    )
    Auth: Optional[SMTPAuth] = field("Credentials for the remote server.", None)


class TransportSocks(Model):
    Address: HostPort = field("Address of the SOCKS5 proxy, host:port.", example="127.0.0.1:1080")
    RemoteIPs: list[IPAddress] = field(
        "IPs the proxy's outgoing connections come from; they belong in SPF records and need "
        "reverse DNS resolving to RemoteHostname.",
        example=["198.51.100.1"],
        min_length=1,
    )
    RemoteHostname: t.Hostname = field(
        "Host name of RemoteIPs, used in the SMTP EHLO.", example="proxy.example.net"
    )


class TransportDirect(Model):
    DisableIPv4: bool = field("Do not connect to remote servers over IPv4.", False)
    DisableIPv6: bool = field("Do not connect to remote servers over IPv6.", False)

    @model_validator(mode="after")
    def _one_family(self) -> "TransportDirect":
        if self.DisableIPv4 and self.DisableIPv6:
            raise ValueError("both IPv4 and IPv6 are disabled, enable at least one")
        return self


class TransportFail(Model):
    SMTPCode: int = field(
        "SMTP reply code for the failure, 4xx or 5xx.", 554, ge=400, le=599
    )
    SMTPMessage: str = field(
        "Text for the failure, shown in the DSN. ASCII, at most 256 characters.",
        "",
        max_length=256,
        pattern=r"^[\x20-\x7e]*$",
    )


class Transport(Model):
    Submissions: Optional[TransportSMTP] = field(
        "Submit to a remote queue (smarthost) with SMTP submission over immediate TLS.", None
    )
    Submission: Optional[TransportSMTP] = field(
        "Submit to a remote queue with SMTP submission, with STARTTLS (required unless "
        "NoSTARTTLS).", None
    )
    SMTP: Optional[TransportSMTP] = field(
        "Relay to a remote queue with SMTP (STARTTLS required unless NoSTARTTLS), "
        "typically unauthenticated.",
        None,
    )
    Socks: Optional[TransportSocks] = field(
        "Direct delivery, with connections made through a SOCKS5 proxy.", None
    )
    Direct: Optional[TransportDirect] = field(
        "Direct delivery with adjusted outgoing connections.", None
    )
    Fail: Optional[TransportFail] = field("Fail every delivery attempt immediately.", None)

    @model_validator(mode="after")
    def _one_method(self) -> "Transport":
        methods = [n for n in type(self).model_fields if getattr(self, n) is not None]
        if len(methods) > 1:
            raise ValueError("a transport has at most one method, got " + ", ".join(methods))
        return self


class DNSConfig(Model):
    Servers: list[HostPort] = field(
        "Name servers to query, as ip:port (e.g. 127.0.0.1:53 for a local unbound). If "
        "empty: those of /etc/resolv.conf.",
        factory=list,
        example=["127.0.0.1:53"],
    )
    TrustAD: bool = field(
        "Trust the DNSSEC 'authentic data' bit in answers: only for a validating resolver "
        "on this machine or a trusted network (DANE and MTA-STS rely on it).",
        False,
    )


class Static(Model):
    """moxtw.toml: settings read once when the server starts."""

    DataDir: str = field(
        "Directory with all data: queue, accounts and their messages, TLS certificates. A "
        "relative path is relative to the directory of this file.",
        example="../data",
    )
    LogLevel: t.LogLevel = field(
        "Default log level. trace logs SMTP and IMAP protocol transcripts, traceauth adds "
        "authentication data (passwords), tracedata adds full messages.",
        example="info",
    )
    PackageLogLevels: dict[str, t.LogLevel] = field(
        "Log levels per package, e.g. smtpserver, imapserver, queue, dns, spf, dkim, dmarc.",
        factory=dict,
        example={"smtpserver": "debug"},
    )
    User: Optional[str] = field(
        "User to run as after binding sockets as root (use this, not twistd --uid); a name "
        "or a numeric uid. If absent: moxtw.",
        None,
        example="moxtw",
    )
    NoFixPermissions: bool = field(
        "Do not fix ownership and permissions at start (as root: the data directory is "
        "given to User, the config directory made readable by User's group).",
        False,
    )
    Hostname: t.Hostname = field(
        "Host name of this machine, e.g. mail.<domain>; used in SMTP greetings and as MX "
        "target.",
        example="mail.example.org",
    )
    CheckUpdates: bool = field(
        "Check once a day for a new release and deliver its changelog to the postmaster.", False
    )
    Pedantic: bool = field(
        "Reject protocol violations seen in the wild (SMTP, IMAP) instead of tolerating them.",
        False,
    )
    TLS: GlobalTLS = field(
        "TLS settings for outgoing connections (SMTP, HTTPS), e.g. extra certificate "
        "authorities.",
        factory=GlobalTLS,
    )
    ACME: dict[str, ACMEConfig] = field(
        "ACME providers for automatic TLS certificates, e.g. Let's Encrypt. Keys are names "
        "referenced by the TLS section of listeners.",
        factory=dict,
        key_example="letsencrypt",
    )
    AdminPasswordFile: Optional[str] = field(
        "File with the hash of the admin password for the admin web interface, relative to "
        "the config directory.",
        None,
        example="adminpasswd",
    )
    Listeners: dict[str, Listener] = field(
        "Groups of IPs with the services enabled on them. SMTP and IMAP listeners serve all "
        "configured domains. A listener named 'public' gets extra checks (ACME, DNSBL "
        "monitoring).",
        key_example="public",
    )
    Postmaster: PostmasterConfig = field(
        "Where email to postmaster addresses goes: plain 'postmaster', postmaster@<hostname>, "
        "and postmaster@<domain> for domains without their own postmaster destination."
    )
    HostTLSRPT: Optional[HostTLSRPTConfig] = field(
        "Where TLS reports (RFC 8460) about this host (for DANE) go. Per-domain reporting is "
        "configured in domains.toml. If absent, no host TLSRPT address is used.",
        None,
    )
    InitialMailboxes: Optional[InitialMailboxesConfig] = field(
        "Mailboxes created for new accounts besides Inbox. If absent: Sent, Archive, Trash, "
        "Drafts and Junk, with their special-use roles.",
        None,
    )
    Transports: dict[str, Transport] = field(
        "Ways to deliver outgoing email other than direct delivery from the queue, e.g. "
        "through a smarthost. Referenced by name from Routes in domains.toml. A transport "
        "has at most one method. Remember SPF and DKIM records for the external party.",
        factory=dict,
        key_example="smarthost",
    )
    NoOutgoingDMARCReports: bool = field(
        "Do not send DMARC aggregate reports to domains that ask for them.", False
    )
    NoOutgoingTLSReports: bool = field(
        "Do not send TLS reports to domains that ask for them.", False
    )
    OutgoingTLSReportsForAllSuccess: bool = field(
        "Also send TLS reports when all connections succeeded.", False
    )
    QuotaMessageSize: int = field(
        "Default maximum total size in bytes of the messages of each account; 0 for no "
        "limit. Accounts can override it.",
        0,
        ge=0,
    )
    DNS: Optional[DNSConfig] = field(
        "DNS resolver settings. If absent: the name servers of /etc/resolv.conf, without "
        "trusting their DNSSEC answers.",
        None,
    )
    TestDirectDeliveryPort: Optional[t.Port] = field(
        "Test-only: direct delivery connects to this port instead of 25, so two instances "
        "can exchange mail on one machine. Refused unless the environment has "
        "MOXTW_TESTING=1.",
        None,
    )
    TestMTASTSPort: Optional[t.Port] = field(
        "Test-only: MTA-STS policies of recipient domains are fetched from this port "
        "instead of 443. Refused unless the environment has MOXTW_TESTING=1.",
        None,
    )


# --- Dynamic configuration (domains.toml) ------------------------------------------------


class CanonicalizationConfig(Model):
    HeaderRelaxed: bool = field(
        "Relaxed header canonicalization: tolerate whitespace changes in headers.", False
    )
    BodyRelaxed: bool = field(
        "Relaxed body canonicalization: tolerate whitespace changes in the body.", False
    )


class Selector(Model):
    Hash: Choice("sha256", "sha1") = field(
        "Hash algorithm: sha256, or the older sha1 (not recommended).", "sha256"
    )
    Canonicalization: CanonicalizationConfig = field(
        "How strictly signed headers and body must match (RFC 6376 3.4).",
        factory=CanonicalizationConfig,
    )
    Headers: list[str] = field(
        "Header fields to sign. If empty, a reasonable default set. Must include From.",
        factory=list,
    )
    DontSealHeaders: bool = field(
        "Do not sign an extra empty instance of each header (which prevents adding "
        "headers later). Not recommended.",
        False,
    )
    Expiration: Optional[Duration] = field(
        "How long a signature stays valid after signing, e.g. 72h; long enough for delivery "
        "through relays. If absent, signatures do not expire.",
        None,
    )
    PrivateKeyFile: str = field(
        "RSA or ed25519 private key in PKCS#8 PEM, relative to the config directory.",
        example="dkim/2024a.rsa2048.privatekey.pkcs8.pem",
    )

    @model_validator(mode="after")
    def _from_signed(self) -> "Selector":
        if self.Headers and "from" not in {h.lower() for h in self.Headers}:
            raise ValueError("Headers must include From")
        return self


class DKIMConfig(Model):
    Selectors: dict[DomainName, Selector] = field(
        "Selectors, each with its key; each needs a DNS record. A selector is used for "
        "signing when listed in Sign.",
        factory=dict,
        key_example="2024a",
    )
    Sign: list[str] = field("Selectors that outgoing email is signed with.", factory=list)

    @model_validator(mode="after")
    def _sign_known(self) -> "DKIMConfig":
        for name in self.Sign:
            try:
                name = parse_domain(name)
            except ValueError:
                pass
            if name not in self.Selectors:
                raise ValueError(f"unknown selector {name!r} in Sign")
        return self


class DMARCConfig(Model):
    Localpart: t.Localpart = field(
        "Localpart of the address that accepts DMARC reports, e.g. dmarcreports. ASCII only.",
        example="dmarcreports",
    )
    Domain: Optional[DomainName] = field(
        "Domain of the reporting address if not this domain: lets this server receive "
        "reports for a domain that is not fully hosted here. Must be a configured domain.",
        None,
        example="example.org",
    )
    Account: str = field("Account that receives the reports.", example="admin")
    Mailbox: str = field("Mailbox for the reports, e.g. DMARC.", example="DMARC")


class MTASTSConfig(Model):
    PolicyID: str = field(
        "Version of the policy, also published in DNS. When changing the policy, change "
        "this first, then the DNS record.",
        example="20240101T000000",
        min_length=1,
    )
    Mode: Choice("enforce", "testing", "none") = field(
        "enforce: senders require verified TLS to deliver. testing: failures are only "
        "reported. none: used to phase out a policy.",
        example="enforce",
    )
    MaxAge: Duration = field(
        "How long senders may cache the policy, typically one or several weeks.",
        example="168h",
    )
    MX: list[MXPattern] = field(
        "Host names allowed as MX, a leading '*.' matches one label. If empty, the host name "
        "of this server.",
        factory=list,
    )


class TLSRPTConfig(Model):
    Localpart: t.Localpart = field(
        "Localpart of the address that accepts TLS reports, e.g. tlsreports.",
        example="tlsreports",
    )
    Domain: Optional[DomainName] = field(
        "Domain of the reporting address if not this domain (see DMARC.Domain).",
        None,
        example="example.org",
    )
    Account: str = field("Account that receives the reports.", example="admin")
    Mailbox: str = field("Mailbox for the reports, e.g. TLSRPT.", example="TLSRPT")


class Route(Model):
    FromDomain: list[RouteDomain] = field(
        "Matches if the envelope sender domain is one of these (a leading dot also matches "
        "subdomains), or if empty.",
        factory=list,
    )
    ToDomain: list[RouteDomain] = field(
        "Like FromDomain, for the recipient domain.", factory=list
    )
    MinimumAttempts: int = field(
        "Matches once at least this many delivery attempts were made, e.g. to fall back to "
        "a smarthost after failing direct delivery.",
        0,
        ge=0,
    )
    Transport: str = field(
        "Name of the transport (from Transports in moxtw.toml) used when the route matches.",
        example="smarthost",
    )


class Alias(Model):
    Addresses: list[EmailAddress] = field(
        "Addresses the message is delivered to; they must be destinations of local accounts. "
        "Each member gets one copy, and the sender, if a member, none.",
        example=["mjl@example.org"],
        min_length=1,
    )
    PostPublic: bool = field(
        "Anyone may send to the alias; otherwise only members (by message From address).",
        False,
    )
    ListMembers: bool = field("Members can see the member addresses.", False)
    AllowMsgFrom: bool = field(
        "Members may send messages with the alias address in the From header.", False
    )


def _localpart_key(value: str) -> str:
    return value.lower()


class DomainConfig(Model):
    Disabled: bool = field(
        "A disabled domain stays configured but gets no ACME certificates, incoming mail is "
        "refused temporarily, and sending from its addresses is refused temporarily. Useful "
        "during migrations.",
        False,
    )
    Description: str = field("Free-form description of the domain.", "")
    ClientSettingsDomain: Optional[t.Hostname] = field(
        "Host name given to email clients instead of this server's host name, e.g. "
        "mail.<domain>, so clients need no changes when mail moves to another server.",
        None,
        example="mail.example.org",
    )
    LocalpartCatchallSeparator: Optional[str] = field(
        "If set, only the part of the localpart before this separator selects the "
        'destination: with "+", you+anything@example.org goes to you@example.org.',
        None,
        example="+",
        min_length=1,
    )
    LocalpartCatchallSeparators: list[Annotated[str, Field(min_length=1)]] = field(
        "Like LocalpartCatchallSeparator, for more than one separator (e.g. + and -). Only "
        "one of the two may be set.",
        factory=list,
    )
    LocalpartCaseSensitive: bool = field(
        "Upper and lower case in localparts are distinct for delivery.", False
    )
    DKIM: DKIMConfig = field(
        "DKIM signing of outgoing email (RFC 6376): the domain takes responsibility for the "
        "messages, and builds up reputation.",
        factory=DKIMConfig,
    )
    DMARC: Optional[DMARCConfig] = field(
        "Address for incoming DMARC aggregate reports for this domain (published in the DMARC "
        "DNS record); reports are parsed and stored.",
        None,
    )
    MTASTS: Optional[MTASTSConfig] = field(
        "MTA-STS policy (RFC 8461) served for this domain: senders learn that delivery needs "
        "WebPKI-verified TLS to the listed MX hosts.",
        None,
    )
    TLSRPT: Optional[TLSRPTConfig] = field(
        "Address for incoming TLS reports (RFC 8460) for this domain; reports are parsed and "
        "stored.",
        None,
    )
    Routes: list[Route] = field(
        "Routes for outgoing email from this domain, tried after the account's routes and "
        "before the global routes.",
        factory=list,
    )
    Aliases: Annotated[
        dict[t.Localpart, Alias], unique_keys(_localpart_key, "alias")
    ] = field(
        "Aliases (lists) delivering to several local addresses. Keys are localparts.",
        factory=dict,
        key_example="team",
    )

    @model_validator(mode="after")
    def _separators(self) -> "DomainConfig":
        if self.LocalpartCatchallSeparator and self.LocalpartCatchallSeparators:
            raise ValueError(
                "cannot have both LocalpartCatchallSeparator and LocalpartCatchallSeparators"
            )
        if len(set(self.LocalpartCatchallSeparators)) != len(self.LocalpartCatchallSeparators):
            raise ValueError("duplicate separator in LocalpartCatchallSeparators")
        return self

    def catchall_separators(self) -> list[str]:
        """The effective localpart catchall separators."""
        if self.LocalpartCatchallSeparator:
            return [self.LocalpartCatchallSeparator]
        return list(self.LocalpartCatchallSeparators)


class Ruleset(Model):
    SMTPMailFromRegexp: Optional[Regexp] = field(
        "Matches if the SMTP MAIL FROM address (not the From header) matches this regular "
        r"expression, e.g. '^user@example\.org$'.",
        None,
        example=r"^list@example\.net$",
    )
    MsgFromRegexp: Optional[Regexp] = field(
        "Matches if the address in the message From header matches this regular expression.",
        None,
        example=r"@example\.net$",
    )
    VerifiedDomain: Optional[DomainName] = field(
        "Matches if this domain (or a subdomain) is verified by SPF or DKIM.",
        None,
        example="list.example.net",
    )
    HeadersRegexp: dict[Regexp, Regexp] = field(
        "Matches if, for each entry, a header field matching the key has a value matching "
        "the value (both lower case; values are trimmed). E.g. for mailing lists: "
        r"'^list-id$' = '<name\.lists\.example\.org>'.",
        factory=dict,
    )
    IsForward: bool = field(
        "For messages forwarded to us, changes junk analysis only: DMARC failures do not "
        "reject, and the forwarder's IP and domains are not used for reputation. Requires "
        "SMTPMailFromRegexp and VerifiedDomain.",
        False,
    )
    ListAllowDomain: Optional[DomainName] = field(
        "For mailing lists, changes junk analysis only: if this domain is verified by SPF or "
        "DKIM, the message is accepted without spam checks.",
        None,
        example="list.example.net",
    )
    AcceptRejectsToMailbox: Optional[str] = field(
        "Changes junk analysis only: a message classified as spam is accepted and delivered "
        "to this mailbox instead of rejected.",
        None,
        example="Junk",
    )
    Mailbox: str = field("Mailbox to deliver to when the ruleset matches.", example="Lists/example")
    Comment: str = field("Free-form comment.", "")

    @model_validator(mode="after")
    def _check(self) -> "Ruleset":
        for key, value in self.HeadersRegexp.items():
            if key != key.lower():
                raise ValueError(f"header field {key!r} must be lower case")
            if value != value.lower():
                raise ValueError(f"header value {value!r} must be lower case")
        if not (
            self.SMTPMailFromRegexp
            or self.MsgFromRegexp
            or self.VerifiedDomain
            or self.HeadersRegexp
        ):
            raise ValueError("ruleset must have at least one rule")
        if self.IsForward and self.ListAllowDomain:
            raise ValueError("ruleset cannot have both IsForward and ListAllowDomain")
        if self.IsForward and not (self.SMTPMailFromRegexp and self.VerifiedDomain):
            raise ValueError("IsForward needs SMTPMailFromRegexp and VerifiedDomain")
        if self.AcceptRejectsToMailbox is not None and self.AcceptRejectsToMailbox.lower() == "inbox":
            raise ValueError("AcceptRejectsToMailbox cannot be Inbox")
        return self


def _smtp_error(value: str) -> str:
    if value and not value.split(" ", 1)[0] in ("421", "550"):
        raise ValueError(f"SMTP error {value!r} must start with 421 or 550")
    return value


class Destination(Model):
    Mailbox: str = field("Mailbox to deliver to when no ruleset matches.", "Inbox")
    Rulesets: list[Ruleset] = field(
        "Rules that deliver matching messages to other mailboxes, e.g. one per mailing list.",
        factory=list,
    )
    SMTPError: Annotated[str, Field(max_length=255, pattern=r"^[\x20-\x7e]*$")] = field(
        "Reject delivery to this destination with this SMTP reply at RCPT TO, starting with "
        "code 421 (temporary) or 550 (no such user); e.g. to exclude addresses from a "
        "catchall.",
        "",
    )
    MessageAuthRequiredSMTPError: Annotated[
        str, Field(max_length=255, pattern=r"^[\x20-\x7e]*$")
    ] = field(
        "If set, messages without aligned SPF or DKIM for their From domain (DMARC-like) are "
        "rejected at DATA with this text. Useful for autoresponders.",
        "",
    )
    FullName: str = field(
        "Name used in the From header of messages composed in webmail from this address.", ""
    )

    @model_validator(mode="after")
    def _check(self) -> "Destination":
        _smtp_error(self.SMTPError)
        if self.SMTPError and "Mailbox" in self.model_fields_set:
            raise ValueError("cannot have both SMTPError and Mailbox")
        if self.SMTPError and self.Rulesets:
            raise ValueError("cannot have both SMTPError and Rulesets")
        return self


class SubjectPassConfig(Model):
    Period: Duration = field(
        "How long a generated pass token is accepted, e.g. 12h.", example="12h"
    )


class AutomaticJunkFlagsConfig(Model):
    Enabled: bool = field(
        "Set $Junk/$NotJunk flags on messages delivered, moved or copied to mailboxes "
        "matching the expressions below (tried in the order junk, neutral, not junk; mailbox "
        "names lower-cased). With two expressions set, the third matches everything else.",
        False,
    )
    JunkMailboxRegexp: Optional[Regexp] = field(
        "Mailboxes whose messages are junk, e.g. ^(junk|spam).", None, example="^(junk|spam)"
    )
    NeutralMailboxRegexp: Optional[Regexp] = field(
        "Mailboxes whose messages get neither flag, e.g. "
        "^(inbox|neutral|postmaster|dmarc|tlsrpt|rejects).",
        None,
        example="^(inbox|neutral|postmaster|dmarc|tlsrpt|rejects)",
    )
    NotJunkMailboxRegexp: Optional[Regexp] = field(
        "Mailboxes whose messages are not junk, e.g. .*", None, example=".*"
    )


class JunkFilterConfig(Model):
    Threshold: float = field(
        "Spam probability (0 to 1) above which a message is rejected, e.g. 0.95.",
        example=0.95,
        ge=0,
        le=1,
    )
    Onegrams: bool = field("Rank single words.", False)
    Twograms: bool = field("Rank pairs of consecutive words.", False)
    Threegrams: bool = field("Rank triples of consecutive words.", False)
    MaxPower: float = field(
        "Maximum weight of a single word (0 to 0.5): with 0.1, a word's spam probability is "
        "kept between 0.1 and 0.9.",
        example=0.01,
        ge=0,
        lt=0.5,
    )
    TopWords: int = field(
        "Number of most spammy and hammy words used for the probability, e.g. 10.",
        example=10,
        ge=0,
    )
    IgnoreWords: float = field(
        "Ignore words whose probability is within this distance of 0.5, e.g. 0.1.",
        0.0,
        ge=0,
        lt=0.5,
    )
    RareWords: int = field(
        "Words seen fewer times than this count as rare and weigh less, e.g. 2.", 0, ge=0
    )


OUTGOING_WEBHOOK_EVENTS = (
    "delivered",
    "suppressed",
    "delayed",
    "failed",
    "relayed",
    "expanded",
    "canceled",
    "unrecognized",
)


class OutgoingWebhookConfig(Model):
    URL: HTTPURL = field(
        "URL that webhooks about outgoing deliveries are POSTed to.",
        example="https://app.example.org/hooks/outgoing",
    )
    Authorization: str = field("Authorization header value sent with each request.", "")
    Events: list[Choice(*OUTGOING_WEBHOOK_EVENTS)] = field(
        "Events to send; if empty all: " + ", ".join(OUTGOING_WEBHOOK_EVENTS) + ".",
        factory=list,
    )


class IncomingWebhookConfig(Model):
    URL: HTTPURL = field(
        "URL that webhooks about incoming deliveries are POSTed to.",
        example="https://app.example.org/hooks/incoming",
    )
    Authorization: str = field("Authorization header value sent with each request.", "")


def _destination_key(value: str) -> tuple[str, str]:
    localpart, domain = parse_destination(value)
    return localpart, domain


class Account(Model):
    Domain: DomainName = field(
        "Default domain of the account; must be a configured domain.", example="example.org"
    )
    Description: str = field("Free-form description, e.g. contact details.", "")
    FullName: str = field(
        "Name used in the From header of messages composed in webmail.", ""
    )
    Destinations: Annotated[
        dict[DestinationAddress, Destination], unique_keys(_destination_key, "destination")
    ] = field(
        "Addresses delivered to this account, which also log in to IMAP, SMTP and webmail. "
        "Keys are email addresses; '@domain' is a catchall for addresses of the domain not "
        "configured elsewhere. An address belongs to one account only.",
        factory=dict,
        key_example="mjl@example.org",
    )
    SubjectPass: Optional[SubjectPassConfig] = field(
        "If set, messages that look somewhat like spam are rejected with instructions to "
        "resend with a token in the subject, which then bypasses the junk filter.",
        None,
    )
    QuotaMessageSize: int = field(
        "Maximum total size in bytes of the account's messages, overriding the global "
        "QuotaMessageSize if not 0; negative for no limit.",
        0,
    )
    RejectsMailbox: str = field(
        "If set, a copy of rejected spam is kept in this mailbox for a while (the sender "
        "still sees the rejection). Messages are removed from it automatically.",
        "",
    )
    KeepRejects: bool = field(
        "Do not automatically remove messages from RejectsMailbox.", False
    )
    Introbox: str = field(
        "If set, messages for Inbox from first-time senders go to this mailbox instead; "
        "moving them out marks the sender as known.",
        "",
    )
    AutomaticJunkFlags: AutomaticJunkFlagsConfig = field(
        "Set junk flags from the mailbox a message is in, so moving messages trains the "
        "junk filter.",
        factory=AutomaticJunkFlagsConfig,
    )
    JunkFilter: Optional[JunkFilterConfig] = field(
        "Bayesian content filter trained on the junk flags of the account's messages.", None
    )
    MaxOutgoingMessagesPerDay: int = field(
        "Maximum outgoing messages in 24 hours, limiting damage from a compromised account.",
        1000,
        ge=1,
    )
    MaxFirstTimeRecipientsPerDay: int = field(
        "Maximum first-time recipients of outgoing messages in 24 hours.", 200, ge=1
    )
    NoFirstTimeSenderDelay: bool = field(
        "Do not delay incoming messages from first-time senders (e.g. for accounts that "
        "answer automatically).",
        False,
    )
    NoCustomPassword: bool = field(
        "The account can only set randomly generated passwords; the admin can set any.", False
    )
    LoginDisabled: Annotated[str, Field(max_length=255, pattern=r"^[\x20-\x7e]*$")] = field(
        "If set, logins are refused with this message; incoming mail is still accepted.", ""
    )
    IMAPCapabilitiesDisabled: list[str] = field(
        "IMAP capabilities (upper case) not offered to this account's clients, to work around "
        "broken clients.",
        factory=list,
    )
    Routes: list[Route] = field(
        "Routes for outgoing email from this account, tried before domain and global routes.",
        factory=list,
    )
    KeepRetiredMessagePeriod: Duration = field(
        "How long delivered or failed messages are kept after leaving the queue (suppression "
        "lists, matching DSNs, debugging), e.g. 168h. 0s: not kept.",
        timedelta(0),
    )
    KeepRetiredWebhookPeriod: Duration = field(
        "How long delivered or failed webhooks are kept after leaving the queue, e.g. 168h.",
        timedelta(0),
    )
    OutgoingWebhook: Optional[OutgoingWebhookConfig] = field(
        "Webhooks for events about outgoing deliveries.", None
    )
    IncomingWebhook: Optional[IncomingWebhookConfig] = field(
        "Webhooks for incoming deliveries.", None
    )
    FromIDLoginAddresses: list[EmailAddress] = field(
        "Logins with these addresses send with a unique id after the catchall separator in "
        "the SMTP MAIL FROM, so bounces can be matched to messages. The domain needs a "
        "catchall separator.",
        factory=list,
    )

    @model_validator(mode="after")
    def _check(self) -> "Account":
        if self.RejectsMailbox.lower() == "inbox":
            raise ValueError("RejectsMailbox cannot be Inbox: it is emptied automatically")
        if self.Introbox and self.Introbox.lower() in ("inbox", self.RejectsMailbox.lower()):
            raise ValueError("Introbox must differ from Inbox and RejectsMailbox")
        return self


class WebStaticConfig(Model):
    StripPrefix: str = field(
        "Prefix removed from the request path before mapping it to a file.", ""
    )
    Root: str = field("Directory to serve files from.", example="/srv/www/example.org")
    ListFiles: bool = field("List directories without index.html.", False)
    ContinueNotFound: bool = field(
        "When a file does not exist, try the next WebHandler instead of answering 404 (only "
        "GET and HEAD).",
        False,
    )
    ResponseHeaders: dict[str, str] = field(
        "Headers added to responses, e.g. Cache-Control.", factory=dict
    )


class WebRedirectConfig(Model):
    BaseURL: str = field(
        "URL to redirect to; its path is replaced by the request path or ReplacePath. "
        "Without a scheme (//host/) the protocol is kept.",
        "",
        example="https://www.example.org",
    )
    OrigPathRegexp: Optional[Regexp] = field(
        "Regular expression the request path must match (else 404), used with ReplacePath.",
        None,
        example="^/old/(.*)$",
    )
    ReplacePath: str = field(
        r"Replacement path, with \1 etc. for groups of OrigPathRegexp.", ""
    )
    StatusCode: int = field("HTTP status of the redirect.", 308, ge=300, le=399)

    @model_validator(mode="after")
    def _check(self) -> "WebRedirectConfig":
        if not self.BaseURL and not (self.OrigPathRegexp and self.ReplacePath):
            raise ValueError("need BaseURL, or OrigPathRegexp with ReplacePath")
        if bool(self.OrigPathRegexp) != bool(self.ReplacePath):
            raise ValueError("OrigPathRegexp and ReplacePath go together")
        return self


class WebForwardConfig(Model):
    StripPath: bool = field("Remove the matched path prefix before forwarding.", False)
    URL: HTTPURL = field(
        "URL requests are forwarded to (reverse proxy), e.g. http://127.0.0.1:8123/base.",
        example="http://127.0.0.1:8123/",
    )
    ResponseHeaders: dict[str, str] = field(
        "Headers added to responses.", factory=dict
    )


class WebInternalConfig(Model):
    BasePath: URLPath = field(
        "Path the internal service is rooted at, e.g. /webmail/.", example="/webmail/"
    )
    Service: Choice("admin", "account", "webmail", "webapi") = field(
        "Internal service: admin, account, webmail or webapi.", example="webmail"
    )


class WebHandler(Model):
    LogName: str = field("Name in logs and metrics.", "")
    Domain: DomainName = field(
        "Host the request is for; it and PathRegexp must match.", example="www.example.org"
    )
    PathRegexp: Regexp = field(
        "Regular expression for the request path; must start with ^.", example="^/"
    )
    DontRedirectPlainHTTP: bool = field(
        "Do not redirect plain HTTP requests to HTTPS.", False
    )
    Compress: bool = field(
        "Gzip compressible responses when the client accepts it.", False
    )
    WebStatic: Optional[WebStaticConfig] = field("Serve static files.", None)
    WebRedirect: Optional[WebRedirectConfig] = field("Redirect requests.", None)
    WebForward: Optional[WebForwardConfig] = field("Forward requests to another web server.", None)
    WebInternal: Optional[WebInternalConfig] = field(
        "Pass requests to an internal service.", None
    )

    @model_validator(mode="after")
    def _check(self) -> "WebHandler":
        if not self.PathRegexp.startswith("^"):
            raise ValueError("PathRegexp must start with ^")
        kinds = [
            k
            for k in ("WebStatic", "WebRedirect", "WebForward", "WebInternal")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "exactly one of WebStatic, WebRedirect, WebForward, WebInternal must be set"
            )
        return self


class HoldRule(Model):
    Account: str = field("Account that submitted the message.", "")
    SenderDomain: Optional[DomainName] = field(
        "Domain of the envelope sender (MAIL FROM).", None, example="example.org")
    RecipientDomain: Optional[DomainName] = field(
        "Domain of the recipient.", None, example="example.com")


class Dynamic(Model):
    """domains.toml: domains and accounts, reloaded when the file changes."""

    Domains: Annotated[dict[DomainName, DomainConfig], unique_keys(parse_domain, "domain")] = field(
        "Domains email is accepted for. Internationalized domains may be written in unicode "
        "or xn-- form; they are used in unicode form.",
        key_example="example.org",
    )
    Accounts: dict[str, Account] = field(
        "Accounts: users with a password, email addresses and their own message store. An "
        "account name is not an email address.",
        key_example="mjl",
    )
    WebDomainRedirects: Annotated[
        dict[DomainName, DomainName], unique_keys(parse_domain, "domain")
    ] = field(
        "Redirect all web requests for a domain (key) to another domain (value), over HTTPS.",
        factory=dict,
        example={"example.net": "www.example.org"},
    )
    WebHandlers: list[WebHandler] = field(
        "Web server handlers: static files, redirects, reverse proxies, internal services. "
        "The first matching handler serves a request; system handlers (ACME, autoconfig, "
        "MTA-STS) come first, the internal web interfaces last.",
        factory=list,
    )
    Routes: list[Route] = field(
        "Global routes for outgoing email, tried after account and domain routes. The first "
        "matching route's transport is used; without a match, direct delivery.",
        factory=list,
    )
    QueueHoldRules: list[HoldRule] = field(
        "Rules that put newly queued outgoing messages on hold (released with 'moxtw queue "
        "unhold'). A message is held when any rule matches; a rule matches when all its "
        "non-empty fields do, so an empty rule holds everything.",
        factory=list,
    )
    MonitorDNSBLs: list[DomainName] = field(
        "DNS block lists checked periodically for our sending IPs, without using them for "
        "incoming email (see DNSBLs of SMTP listeners).",
        factory=list,
    )
