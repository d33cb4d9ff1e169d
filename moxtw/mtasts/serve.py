"""The MTA-STS policy host: ``mta-sts.<domain>`` on a listener with MTASTSHTTPS.

RFC 8461 3.3: the policy is fetched with HTTPS GET from
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` and answered with 200 and
``text/plain``; redirects are not followed by senders, so none are given. Nothing else is
served on that host: other paths are 404. The domains come from the running config, so
a reload of domains.toml changes the policies at once.
"""

from twisted.web import resource

from moxtw.dns import normalize
from moxtw.mtasts.policy import POLICY_PATH, policy_for

PREFIX = "mta-sts."


def request_host(request):
    """The Host header's name: lower case, without port, A-labels; None if unusable."""
    raw = request.getHeader(b"host")
    if not raw:
        return None
    host = raw.decode("ascii", "replace").strip()
    if host.startswith("["):
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    try:
        return normalize(host)
    except Exception:
        return None


class MTASTSResource(resource.Resource):
    """Serves the policies; ``for_host(name)`` says whether a request is for it."""

    isLeaf = True

    def __init__(self, current):
        """``current()`` returns (static, dynamic) config."""
        super().__init__()
        self._current = current

    def domain_for(self, host):
        """The configured domain key with MTASTS for ``mta-sts.<domain>``, or None."""
        if host is None or not host.startswith(PREFIX):
            return None
        want = host[len(PREFIX):]
        static, dynamic = self._current()
        for key, dom in dynamic.Domains.items():
            if dom.MTASTS is not None and not dom.Disabled and normalize(str(key)) == want:
                return key
        return None

    def render(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        domain = self.domain_for(request_host(request))
        if domain is None or request.path != POLICY_PATH or request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(404 if request.method in (b"GET", b"HEAD") else 405)
            return b"not found\n"
        static, dynamic = self._current()
        return policy_for(dynamic.Domains[domain], static.Hostname).text()
