"""DKIM signing of outgoing messages with the keys of their From domain (RFC 6376)."""

from twisted.logger import Logger

from moxtw.dkim.sign import Signer, SignError, from_domain

log = Logger(namespace="moxtw.dkim")


class DKIMSigners:
    """Signers per From domain from the current domains.toml, keys loaded once per
    configuration (a reload brings new config objects, and so new signers).

    ``sign(message)`` is blocking (key operations): run it in a thread. It returns the
    DKIM-Signature header fields to prepend, or b"" when the From domain is not ours or
    signs with no selector. A domain whose keys cannot be loaded is logged and its mail
    goes out unsigned rather than not at all."""

    def __init__(self, current, config_dir):
        self.current = current
        self.config_dir = config_dir
        self._cache = {}

    def signer(self, domain):
        _, dynamic = self.current()
        dconf = dynamic.Domains.get(domain)
        if dconf is None or not dconf.DKIM.Sign:
            return None
        key = (domain, id(dconf.DKIM))
        hit = self._cache.get(key)
        if hit is not None and hit[0] is dconf.DKIM:
            return hit[1]
        try:
            signer = Signer.from_config(domain, dconf.DKIM, self.config_dir)
        except (OSError, ValueError) as e:
            log.error("loading DKIM keys of {domain} failed, not signing: {error}", domain=domain, error=str(e))
            signer = None
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (dconf.DKIM, signer)
        return signer

    def sign(self, message, now=None):
        domain = from_domain(message)
        if domain is None:
            return b""
        signer = self.signer(domain)
        if signer is None:
            return b""
        try:
            return signer.sign(message, now=now)
        except SignError as e:
            log.warn("not DKIM-signing message from {domain}: {error}", domain=domain, error=str(e))
            return b""
