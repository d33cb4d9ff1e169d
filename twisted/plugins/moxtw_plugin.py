"""twistd plugin: ``twistd moxtw serve`` and ``twistd moxtw localserve``.

Kept small: option parsing here, everything else in moxtw.app and moxtw.localserve.
(No __init__.py in twisted/plugins: it is a namespace shared with Twisted.)
"""

from twisted.application.service import ServiceMaker

moxtw = ServiceMaker(
    "moxtw",
    "moxtw.tap",
    "moxtw mail server: SMTP, IMAP, web, queue (serve | localserve)",
    "moxtw",
)
