"""SASL for SMTP submission, IMAP and the SMTP client.

Mechanisms PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-1/256 (+PLUS). Passwords are prepared with
the PRECIS OpaqueString profile (:mod:`moxtw.sasl.precis`, RFC 8265) and accounts store
only derived keys (:mod:`moxtw.sasl.credentials`, RFC 5802, RFC 7677, RFC 2195).
"""
