"""MTA-STS policy text (RFC 8461 3.2) for a configured domain."""

from dataclasses import dataclass

POLICY_PATH = b"/.well-known/mta-sts.txt"
# RFC 8461 3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31557600


@dataclass(frozen=True)
class Policy:
    mode: str
    mx: tuple
    max_age: int

    def text(self):
        """The policy file: key/value lines separated by CRLF (RFC 8461 3.2)."""
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines += [f"mx: {m}" for m in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return ("\r\n".join(lines) + "\r\n").encode("ascii")


def policy_for(domain_config, hostname):
    """The Policy of a domain with MTASTS configured (None without): the MX list is
    MTASTS.MX, or this server's host name."""
    conf = domain_config.MTASTS
    if conf is None:
        return None
    mx = tuple(str(m) for m in conf.MX) or (str(hostname),)
    max_age = max(0, min(int(conf.MaxAge.total_seconds()), MAX_AGE_LIMIT))
    return Policy(conf.Mode, mx, max_age)


def txt_record(domain_config):
    """The ``_mta-sts`` TXT value (RFC 8461 3.1)."""
    return f"v=STSv1; id={domain_config.MTASTS.PolicyID}"
