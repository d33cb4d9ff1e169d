"""SMTP trace header fields added to received messages: Received (RFC 5321 4.4, RFC 3848)
and Authentication-Results (RFC 8601)."""

from email.utils import format_datetime


def received_header(
    *, from_ehlo, remote_ip, remote_name, hostname, local_ip, with_proto, msg_id, rcpt, now, tls
):
    """A Received trace header (RFC 5321 4.4, RFC 3848 protocol types), folded."""
    parts = [f"from {from_ehlo} ({remote_name or 'unknown'} [{remote_ip}])"]
    parts.append(f"by {hostname} ([{local_ip}])" + (f" ({tls})" if tls else ""))
    parts.append(f"via tcp with {with_proto} id {msg_id}" + (f" for <{rcpt}>" if rcpt else ""))
    value = "\r\n\t".join(parts) + f"; {format_datetime(now)}"
    return f"Received: {value}\r\n".encode("utf-8")


def authentication_results(hostname, results=()):
    """Authentication-Results (RFC 8601) with the checks done; "none" when no checks ran."""
    if not results:
        return f"Authentication-Results: {hostname}; none\r\n".encode("utf-8")
    return (
        f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(results) + "\r\n"
    ).encode("utf-8")
