"""TLS channel binding for SCRAM-*-PLUS (RFC 5802 6).

:func:`channel_binding_for` reads the binding of an established Twisted TLS connection
(``transport.getHandle()`` is the pyOpenSSL ``Connection`` both for TLS listeners and
after ``startTLS``):

- TLS 1.3: "tls-exporter" (RFC 9266 2): the TLS exporter (RFC 8446 7.5) with label
  "EXPORTER-Channel-Binding", an empty context and 32 bytes of output;
- TLS 1.2: "tls-unique" (RFC 5929 3.1): the first Finished message of the most recent
  handshake, which is the client's Finished after a full handshake and the server's
  after an abbreviated (resumed) one. Which of our own and the peer's Finished that is
  depends on which side we are, so the caller says so or we find out from the TCP
  transport underneath.

Both sides must call it after the handshake completed (``IHandshakeListener``, or once
data has been received over TLS).
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

__all__ = [
    "ChannelBinding",
    "TLS_EXPORTER",
    "TLS_UNIQUE",
    "EXPORTER_LABEL",
    "channel_binding_for",
]

TLS_EXPORTER = "tls-exporter"
TLS_UNIQUE = "tls-unique"
# RFC 9266 2.
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH = 32


@dataclass(frozen=True)
class ChannelBinding:
    """A channel binding type (RFC 5056 name, as in "p=" of the GS2 header) and its data."""

    type: str
    data: bytes

    def __repr__(self) -> str:  # the data is a secret-ish value; keep logs short
        return f"ChannelBinding({self.type!r}, <{len(self.data)} bytes>)"


def _is_server(transport) -> bool | None:
    """Whether the TLS connection under transport was accepted (True) or initiated
    (False), from the TCP transport found by following ``.transport``; None if unknown."""
    from twisted.internet import tcp

    t = transport
    for _ in range(5):
        if isinstance(t, tcp.Server):
            return True
        if isinstance(t, tcp.Client):
            return False
        t = getattr(t, "transport", None)
        if t is None:
            break
    return None


def _session_reused(conn: SSL.Connection) -> bool:
    # pyOpenSSL has no wrapper for SSL_session_reused; its binding is in the lib it
    # exposes. Fall back to "full handshake", which Twisted does unless told otherwise.
    try:
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(conn._ssl))  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return False


def channel_binding_for(transport, server: bool | None = None) -> ChannelBinding | None:
    """The channel binding of a Twisted TLS transport, or None when it has none (no
    TLS, handshake not complete, TLS before 1.2, side unknown for TLS 1.2).

    ``server``: whether we are the TLS server; only needed for TLS 1.2, and found from
    the TCP transport when not given."""
    get_handle = getattr(transport, "getHandle", None)
    conn = get_handle() if get_handle is not None else None
    if not isinstance(conn, SSL.Connection):
        return None
    version = conn.get_protocol_version_name()
    if version == "TLSv1.3":
        # RFC 9266 2: "with a context value of zero length". For TLS 1.3 an absent and
        # an empty context give the same output (RFC 8446 7.5); we pass the empty one.
        try:
            data = conn.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH, b"")
        except SSL.Error:
            return None
        return ChannelBinding(TLS_EXPORTER, data)
    if version == "TLSv1.2":
        if server is None:
            server = _is_server(transport)
            if server is None:
                return None
        # RFC 5929 3.1: the first Finished message sent in the most recent handshake:
        # the client's on a full handshake, the server's on a resumed one.
        own = server == _session_reused(conn)
        data = conn.get_finished() if own else conn.get_peer_finished()
        if not data:
            return None
        return ChannelBinding(TLS_UNIQUE, data)
    return None
