"""The web interfaces (Klein apps, DESIGN.md 9): the account pages at ``/``
(``moxtw.web.account``) and the admin pages at ``/admin/`` (``moxtw.web.admin``), with
their shared sessions, CSRF checks, templates and headers (``moxtw.web.base``,
``moxtw.web.sessions``). Webmail, webapi and autoconfig are not built yet."""
