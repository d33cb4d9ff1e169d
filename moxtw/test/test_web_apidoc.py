"""The JSON API documentation of each web app matches its routes, both ways: every
route under /api/ is listed (with its methods), nothing listed is missing; the page for
browsers shows each call with an example."""

import html
import json

from twisted.internet import defer

from moxtw.test.test_web import WebTestBase
from moxtw.web import account, admin


def api_routes(app_class):
    """{(method, rule)} of a Klein app's routes under /api/ (HEAD/OPTIONS left out)."""
    found = set()
    for rule in app_class.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule == "/api/":
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, rule.rule))
    return found


def routed(app_class, method, path):
    """The (method, rule) a documented call reaches (placeholders such as <id> filled
    in with 1), or None."""
    import re

    from werkzeug.exceptions import HTTPException

    adapter = app_class.app.url_map.bind("localhost")
    try:
        rule, _ = adapter.match(re.sub(r"<[^>]*>", "1", path), method=method, return_rule=True)
    except HTTPException:
        return None
    return (method, rule.rule)


class APIDocTests(WebTestBase):
    def test_documented_is_routed_and_routed_is_documented(self):
        for cls, doc in ((account.AccountApp, account.API), (admin.AdminApp, admin.API)):
            listed = {(m, p) for m, p, _ in doc}
            self.assertEqual(len(listed), len(doc), "an API entry is listed twice")
            reached = {}
            for m, p in listed:
                rule = routed(cls, m, p)
                self.assertIsNotNone(rule, f"{cls.__name__}: {m} {p} is documented but not routed")
                reached[rule] = (m, p)
            undocumented = api_routes(cls) - set(reached)
            self.assertEqual(undocumented, set(), f"{cls.__name__}: routes not documented")

    @defer.inlineCallbacks
    def test_json_and_page(self):
        for client, prefix, doc in ((self.account, "", account.API), (self.admin, "/admin", admin.API)):
            r, content = yield self.call(client, "GET", "/api/")
            self.assertEqual(r.headers.getRawHeaders(b"content-type"), [b"application/json"])
            self.assertEqual([(e["method"], e["path"]) for e in json.loads(content)],
                             [(m, prefix + p) for m, p, _ in doc])
            r, page = yield self.call(client, "GET", "/api/", headers={"Accept": "text/html,*/*;q=0.8"})
            self.assertEqual(r.code, 200)
            text = html.unescape(page.decode())
            for m, p, about in doc:
                self.assertIn(f"{m} {prefix}{p}", text)
                self.assertIn(about, text)
            self.assertIn("curl -c jar -H 'Content-Type: application/json' -d '{\"", text)
            self.assertIn(f"http://mail.example.org{prefix}/api/logout", text)
