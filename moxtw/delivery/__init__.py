"""Local delivery: which account and mailbox a message goes to, and putting it there.

Every message for one of our own accounts takes this path, whether it came in over SMTP
(``moxtw.smtpserver``) or was queued by submission, a DSN or a report (``moxtw.queue``).
Both receive one :class:`~moxtw.delivery.router.Router`. The layers only go down:
smtpserver and queue call delivery, delivery calls the store (and, in localserve, our own
SMTP listener through ``moxtw.smtpclient``).

The steps, in order (``Router.deliver``):

1. **Recipients** (``recipients``): an address is resolved against domains.toml to an
   account Destination, an alias (expanded to its member accounts), postmaster/abuse, a
   reporting address or the domain's catchall; at RCPT TO for incoming mail, when the
   queue attempts a local recipient otherwise.
2. **Authentication results**: SPF, DKIM, DMARC and iprev of incoming mail are computed
   by the SMTP layer (``moxtw.smtpserver.msgauth``) and passed in as ``facts`` (stored
   with the message) and ``verified_domains`` (used by rulesets). Queued mail from our own
   users has none.
3. **Junk decision**: not built yet (``JunkFilter`` says so when set); the junk filter
   will decide here, per recipient account, between the Inbox, the Junk mailbox and
   refusing.
4. **Rules and filters** (``rules``): the destination's Rulesets pick the mailbox (the
   first whose conditions hold); Sieve and forwarding will plug in here.
5. **Mailbox** (``local``): the store delivers, durably, one copy per (account, mailbox);
   results come per recipient.

localserve (``localserve``) adds its test rules: localparts that ask for an error at a
given SMTP stage or at delivery from the queue, and every address to the one account.
"""

from moxtw.delivery.local import LocalDelivery, RcptResult
from moxtw.delivery.result import DeliveryResult
from moxtw.delivery.router import Router

__all__ = ["DeliveryResult", "LocalDelivery", "RcptResult", "Router"]
