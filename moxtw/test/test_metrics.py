"""Tests for moxtw.metrics: the registry, store metrics and the /metrics resource."""

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from moxtw import metrics


class RegistryTests(SynchronousTestCase):
    def test_store_metrics_registered(self):
        names = {m.name for m in metrics.REGISTRY.collect()}
        for name in (
            "store_deliveries",  # counters are reported without _total
            "store_delivery_duration_seconds",
            "store_commit_batch_size",
            "store_accounts_open",
            "store_fsync_duration_seconds",
            "process_cpu_seconds",
            "python_info",
        ):
            self.assertIn(name, names)

    def test_store_metrics_usable(self):
        before = metrics.REGISTRY.get_sample_value("store_deliveries_total", {"result": "ok"})
        metrics.STORE_DELIVERIES.labels(result="ok").inc()
        after = metrics.REGISTRY.get_sample_value("store_deliveries_total", {"result": "ok"})
        self.assertEqual(after, before + 1)
        self.assertIsNotNone(
            metrics.REGISTRY.get_sample_value("store_deliveries_total", {"result": "error"})
        )

        n = metrics.REGISTRY.get_sample_value("store_commit_batch_size_count")
        metrics.STORE_COMMIT_BATCH_SIZE.observe(3)
        self.assertEqual(metrics.REGISTRY.get_sample_value("store_commit_batch_size_count"), n + 1)

        metrics.STORE_ACCOUNTS_OPEN.inc()
        metrics.STORE_ACCOUNTS_OPEN.dec()
        with metrics.STORE_DELIVERY_DURATION.time():
            pass
        metrics.STORE_FSYNC_DURATION.observe(0.002)


class ResourceTests(SynchronousTestCase):
    def setUp(self):
        self.registry = CollectorRegistry()
        self.counter = Counter("test_things_total", "Things.", ["kind"], registry=self.registry)
        self.counter.labels(kind="a b").inc(2)
        self.treq = StubTreq(metrics.make_metrics_site(self.registry).resource)

    def get(self, url, method="GET"):
        resp = self.successResultOf(self.treq.request(method, url))
        body = self.successResultOf(resp.content())
        return resp, body

    def test_metrics(self):
        resp, body = self.get("http://localhost/metrics")
        self.assertEqual(resp.code, 200)
        ctype = resp.headers.getRawHeaders("content-type")[0]
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertIn(b'test_things_total{kind="a b"} 2.0\n', body)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        self.assertEqual(families["test_things"].type, "counter")

    def test_default_registry(self):
        treq = StubTreq(metrics.make_metrics_site().resource)
        resp = self.successResultOf(treq.get("http://localhost/metrics"))
        body = self.successResultOf(resp.content())
        self.assertIn(b"# TYPE store_deliveries_total counter", body)
        self.assertIn(b"store_accounts_open ", body)

    def test_head(self):
        resp, body = self.get("http://localhost/metrics", "HEAD")
        self.assertEqual(resp.code, 200)
        self.assertEqual(body, b"")

    def test_index(self):
        resp, body = self.get("http://localhost/")
        self.assertEqual(resp.code, 200)
        self.assertIn(b"/metrics", body)

    def test_not_found(self):
        resp, body = self.get("http://localhost/other")
        self.assertEqual(resp.code, 404)

    def test_post_not_allowed(self):
        resp, body = self.get("http://localhost/metrics", "POST")
        self.assertEqual(resp.code, 405)
