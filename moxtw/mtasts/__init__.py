"""MTA-STS (RFC 8461): the policies of our domains, served at
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (:mod:`moxtw.mtasts.serve`).
Applying other domains' policies to outgoing delivery is not built yet."""
