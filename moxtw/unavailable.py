"""An honest answer on web listeners whose interfaces are not part of this version yet.

The service tree opens every configured listener so that ports, TLS and privilege
dropping work from the start. Paths of interfaces not built yet (webmail, webapi,
autoconfig, the webserver's handlers) answer HTTP 503 with a plain-text explanation,
never with something that looks like a working page.
"""

from twisted.web import resource, server

WEB_TEXT = "moxtw web interfaces webmail, webapi and autoconfig, and the webserver, are not part of this version yet"


class WebUnavailable(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (WEB_TEXT + "\n").encode()


def web_unavailable_site():
    return server.Site(WebUnavailable())
