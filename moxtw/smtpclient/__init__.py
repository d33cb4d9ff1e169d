"""SMTP client for outgoing delivery (RFC 5321 and extensions); see :mod:`.client`."""

from moxtw.smtpclient.client import RcptResult, Result, SMTPClientError, SMTPClientProtocol, deliver

__all__ = ["deliver", "Result", "RcptResult", "SMTPClientError", "SMTPClientProtocol"]
