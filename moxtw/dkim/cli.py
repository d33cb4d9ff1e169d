"""The ``moxtw dkim gened25519`` and ``moxtw dkim genrsa`` commands: write a new private
key as PKCS#8 PEM (to redirect into a file under the config directory) and say which DNS
TXT record to publish."""

import sys

from moxtw.dkim.keys import (
    DEFAULT_RSA_BITS, generate_ed25519, generate_rsa, parse_private_key, txt_strings,
)


def _write(pem, out, err):
    out.write(pem.decode("ascii"))
    out.flush()
    record = parse_private_key(pem).dns_record
    quoted = " ".join(f'"{s}"' for s in txt_strings(record))
    print("Publish this DNS TXT record at <selector>._domainkey.<domain>:", file=err)
    print(record, file=err)
    print("In a zone file (strings of at most 255 characters):", file=err)
    print(f"<selector>._domainkey.<domain>. IN TXT {quoted}", file=err)
    return 0


def gened25519(out, err=None):
    """Write a new ed25519 private key (PKCS#8 PEM) to ``out``; the DNS record to ``err``
    (default stderr)."""
    return _write(generate_ed25519(), out, err or sys.stderr)


def genrsa(out, bits=DEFAULT_RSA_BITS, err=None):
    """Write a new RSA private key of ``bits`` bits (PKCS#8 PEM) to ``out``; the DNS
    record to ``err`` (default stderr). Returns 1 for an unacceptable size."""
    err = err or sys.stderr
    try:
        pem = generate_rsa(bits)
    except ValueError as e:
        print(str(e), file=err)
        return 1
    return _write(pem, out, err)
