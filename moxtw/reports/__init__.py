"""Reports about mail authentication and transport security, received and sent.

- ``service``: :class:`~moxtw.reports.service.ReportsService`, the part the server runs:
  stores reports that arrive at reporting addresses, records DMARC evaluations of incoming
  mail, and sends the aggregate reports that are due.
- ``received``: the shared base of the databases of received reports.
- ``dmarc``: DMARC aggregate reports (RFC 7489): parsing, the received ones
  (``data/dmarc.db``), the evaluations kept for outgoing ones (``data/dmarceval.db``) and
  composing outgoing ones.
- ``tls``: SMTP TLS reports (RFC 8460): parsing and the received ones (``data/tlsrpt.db``).
"""
