"""A SOCKS5 client endpoint (RFC 1928), for direct delivery through a proxy.

Only the "no authentication" method and the CONNECT command are used: the proxy is
expected to be trusted and local (mox's Socks transport). Once the proxy has connected
to the destination, the wrapped protocol gets the proxy connection as its transport, so
STARTTLS and everything else work as on a direct connection.
"""

import ipaddress
import struct

from twisted.internet import defer, protocol
from twisted.logger import Logger

log = Logger(namespace="moxtw.smtpclient")

# RFC 1928 6: reply codes.
_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class SOCKSError(Exception):
    """The proxy refused or failed the connection; ``code`` is its RFC 1928 reply code
    (None for protocol errors)."""

    def __init__(self, text, code=None):
        super().__init__(text)
        self.code = code


def connect_request(host, port):
    """The CONNECT request for host (IP or name) and port (RFC 1928 4, 5)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise ValueError(f"host name {host!r} too long for SOCKS5")
        addr = b"\x03" + bytes([len(name)]) + name
    else:
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    return b"\x05\x01\x00" + addr + struct.pack("!H", port)


class _Handshake(protocol.Protocol):
    """Speaks SOCKS5 to the proxy, then hands the connection to ``inner``."""

    def __init__(self, inner, host, port, ready):
        self.inner = inner
        self.host = host
        self.port = port
        self.ready = ready
        self._buf = b""
        self._state = "method"
        self._connected = False

    def connectionMade(self):
        # RFC 1928 3: version 5, one method: 0 (no authentication required).
        self.transport.write(b"\x05\x01\x00")

    def _fail(self, err):
        self._state = "failed"
        if not self.ready.called:
            self.ready.errback(err)
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self._connected:
            self.inner.dataReceived(data)
            return
        if self._state == "failed":
            return
        self._buf += data
        if self._state == "method":
            if len(self._buf) < 2:
                return
            ver, method, self._buf = self._buf[0], self._buf[1], self._buf[2:]
            if ver != 5 or method != 0:
                self._fail(SOCKSError(f"proxy does not accept unauthenticated clients (method {method})"))
                return
            try:
                self.transport.write(connect_request(self.host, self.port))
            except ValueError as e:
                self._fail(SOCKSError(str(e)))
                return
            self._state = "reply"
        if self._state == "reply":
            # RFC 1928 6: VER REP RSV ATYP BND.ADDR BND.PORT
            if len(self._buf) < 5:
                return
            ver, rep, _, atyp = self._buf[:4]
            if ver != 5:
                self._fail(SOCKSError(f"protocol error: version {ver} in reply"))
                return
            if rep != 0:
                self._fail(SOCKSError(f"proxy: {_REPLIES.get(rep, f'error {rep}')}", rep))
                return
            if atyp == 1:
                n = 4 + 4 + 2
            elif atyp == 4:
                n = 4 + 16 + 2
            elif atyp == 3:
                n = 4 + 1 + self._buf[4] + 2
            else:
                self._fail(SOCKSError(f"protocol error: address type {atyp} in reply"))
                return
            if len(self._buf) < n:
                return
            rest = self._buf[n:]
            self._buf = b""
            self._connected = True
            self.inner.makeConnection(self.transport)
            self.ready.callback(self.inner)
            if rest:
                self.inner.dataReceived(rest)

    def connectionLost(self, reason=protocol.connectionDone):
        if self._connected:
            self.inner.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(SOCKSError(f"proxy closed the connection: {reason.getErrorMessage()}"))


class _HandshakeFactory(protocol.Factory):
    def __init__(self, inner_factory, host, port, ready):
        self.inner_factory = inner_factory
        self.host = host
        self.port = port
        self.ready = ready
        self.built = []

    def buildProtocol(self, addr):
        inner = self.inner_factory.buildProtocol(addr)
        if inner is None:
            return None
        h = _Handshake(inner, self.host, self.port, self.ready)
        self.built.append(h)
        return h


class SOCKS5ClientEndpoint:
    """IStreamClientEndpoint: connects to ``host``:``port`` through the proxy reached by
    ``proxy_endpoint``. The Deferred fires with the inner protocol once the proxy has
    connected to the destination."""

    def __init__(self, proxy_endpoint, host, port):
        self.proxy_endpoint = proxy_endpoint
        self.host = host
        self.port = port

    def connect(self, factory):
        handshakes = []

        def cancel(_):
            for h in handshakes:
                if h.transport is not None:
                    h.transport.abortConnection()

        ready = defer.Deferred(canceller=cancel)
        hf = _HandshakeFactory(factory, self.host, self.port, ready)
        hf.built = handshakes
        d = self.proxy_endpoint.connect(hf)

        def connected(handshake):
            return ready

        def cancel_ready(f):
            if not ready.called:
                ready.cancel()
                ready.addErrback(lambda _: None)
            return f

        d.addCallbacks(connected, cancel_ready)
        return d
