"""What the IMAP server needs from the rest of moxtw: logins and their limits."""

from moxtw import ratelimit
from moxtw.auth import LoginLimits

CONNECTION_LIMITS = [(60, 300), (3600, 3000), (86400, 30000)]


class IMAPBackend:
    def __init__(self, authenticator, clock=None, login_limits=None, delivery_mailboxes=None):
        self.authenticator = authenticator
        # account name -> names of the mailboxes mail is delivered to (NOTIFY "inboxes").
        self.delivery_mailboxes = delivery_mailboxes or (lambda account: ("Inbox",))
        # One LoginLimits for all protocols (app wiring); a private one otherwise.
        self.login_limits = login_limits or LoginLimits(authenticator, clock)
        self.connections = ratelimit.Limiter(CONNECTION_LIMITS, clock)

    def connection_allowed(self, session):
        if not self.connections.add(session.remote_ip):
            return "too many connections from your IP address, try again later"
        return None
