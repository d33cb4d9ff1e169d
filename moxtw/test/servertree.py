"""Shared fixture for end-to-end tests: a config directory and a running service tree.

``write_config(dir, static, dynamic)`` writes moxtw.toml/domains.toml (plus a self-signed
CA and certificate in ``dir/tls`` for listeners that name them) and loads them;
``start(testcase, cfg)`` builds ``moxtw.app.makeService``, binds and starts it, stops it
at cleanup, and waits until the store and queue are ready.
"""

import os

from twisted.internet import defer, reactor

from moxtw import app
from moxtw import config as mconfig
from moxtw.dns import MockResolver, TemporaryFailure
from moxtw.tls import selfsigned


def write_config(d, static, dynamic):
    """Returns (Config, path of the CA certificate)."""
    os.makedirs(d, exist_ok=True)
    _, _, ca = selfsigned.ensure_localserve_cert(os.path.join(d, "tls"))
    with open(os.path.join(d, "moxtw.toml"), "w") as f:
        f.write(static)
    with open(os.path.join(d, "domains.toml"), "w") as f:
        f.write(dynamic)
    return mconfig.load(d), ca


@defer.inlineCallbacks
def start(testcase, cfg, localserve=False, resolver=None):
    if resolver is None and cfg.static.DNS is None:
        # No test reaches the internet: without configured (loopback) name servers,
        # every lookup fails temporarily.
        resolver = MockResolver(default=TemporaryFailure)
    root = app.makeService(cfg, reactor=reactor, localserve=localserve, resolver=resolver)
    root.privilegedStartService()
    root.startService()
    testcase.addCleanup(root.stopService)
    yield root.getServiceNamed("store").ready
    yield root.queue_runner.wait_ready()
    return root
