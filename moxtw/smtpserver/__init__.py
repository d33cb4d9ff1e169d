"""SMTP server (RFC 5321): incoming mail on port 25, submission on 587/465 (RFC 6409)."""
