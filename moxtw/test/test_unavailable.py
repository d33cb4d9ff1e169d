"""Web listeners whose interfaces are not built yet answer 503, honestly."""

from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from moxtw import unavailable


class WebTests(unittest.SynchronousTestCase):
    def test_503(self):
        req = DummyRequest([b"admin"])
        body = unavailable.WebUnavailable().render(req)
        self.assertEqual(req.responseCode, 503)
        self.assertIn(b"not part of this version", body)
