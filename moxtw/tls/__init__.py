"""TLS: certificates for listeners.

Static key/certificate pairs, ACME (RFC 8555), SNI selection, and for localserve a
self-signed CA with a server certificate (:mod:`moxtw.tls.selfsigned`). TLS 1.2 is the
minimum version everywhere.
"""
