"""SASL for SMTP submission, IMAP and the SMTP client.

Mechanisms PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-1/256 (+PLUS). Passwords are prepared with
the PRECIS OpaqueString profile (:mod:`moxtw.sasl.precis`, RFC 8265) and accounts store
only derived keys (:mod:`moxtw.sasl.credentials`, RFC 5802, RFC 7677, RFC 2195).
"""

from moxtw.sasl.channelbinding import ChannelBinding, channel_binding_for
from moxtw.sasl.client import ClientMechanism, choose_client_mechanism, new_client_mechanism
from moxtw.sasl.server import (
    SASLError,
    ServerMechanism,
    Step,
    new_server_mechanism,
    server_mechanisms,
)

__all__ = [
    "ChannelBinding",
    "channel_binding_for",
    "ClientMechanism",
    "choose_client_mechanism",
    "new_client_mechanism",
    "SASLError",
    "ServerMechanism",
    "Step",
    "new_server_mechanism",
    "server_mechanisms",
]
