"""The transport on requests, for proxies and netrc: it reads proxy variables (HTTP(S)_PROXY, NO_PROXY)
and netrc files, which :mod:`.transport`'s http.client sessions do not."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from ..errors import RemoteError, TransientError, tls_failure
from ..settings import Network
from .exchange import (MAX_REDIRECTS, USER_AGENT, Body, Response, auth_headers, check_redirect, opened, reason,
                       renewed, safe)


class _RequestsBody(Response):
    def __init__(self, resp):
        super().__init__(resp.status_code, resp.headers, resp.url, bool(resp.history))
        self._resp = resp

    def chunks(self, size: int) -> Iterator[bytes]:
        import requests

        try:
            yield from self._resp.iter_content(size)
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout) as e:
            raise TransientError(f"{type(e).__name__}: {reason(e)}") from None

    def close(self) -> None:
        self._resp.close()


class RequestsSession:
    """The same interface on requests, which reads proxy variables (HTTP(S)_PROXY, NO_PROXY) and netrc."""

    def __init__(self, net: Network):
        import requests

        class Checked(requests.Session):
            def rebuild_auth(self, prepared_request, response):  # called before each redirect is followed
                check_redirect(net, prepared_request.url)
                super().rebuild_auth(prepared_request, response)

        self.net = net
        self._session = Checked()
        self._session.max_redirects = MAX_REDIRECTS
        self._session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})

    def request(self, method: str, url: str, headers: Mapping[str, str], allow_redirects: bool = True,
                body: Body = None) -> Response:
        answer = self._request(method, url, headers, allow_redirects, body)
        # The 401's own URL: after a redirect, a server elsewhere must not get to ask for credentials.
        if renewed(self.net, answer, answer.url, False):
            answer.close()
            answer = self._request(method, url, headers, allow_redirects, body)
        return answer

    def _request(self, method: str, url: str, headers: Mapping[str, str], allow_redirects: bool,
                 body: Body) -> Response:
        import requests

        self.net.check_url(url)
        # As auth=, not a header: requests would let a netrc entry for the hub replace a header. It drops
        # this on a redirect to another host.
        auth = self._signed if auth_headers(self.net, url) else None
        data = opened(body)
        try:
            resp = self._session.request(
                method, url, headers=headers, auth=auth, stream=True, allow_redirects=allow_redirects,
                timeout=(self.net.connect_timeout, self.net.read_timeout), data=data,
                # per request: a session-level setting loses to REQUESTS_CA_BUNDLE in the environment
                verify=self.net.verify,
            )
        except requests.exceptions.SSLError as e:
            raise RemoteError(tls_failure(urlsplit(url).netloc, e)) from None
        except requests.exceptions.TooManyRedirects:
            raise RemoteError(f"too many redirects fetching {safe(url)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise TransientError(f"{type(e).__name__}: {reason(e)}") from None
        finally:
            if hasattr(data, "close"):
                data.close()
        return _RequestsBody(resp)

    def _signed(self, request):
        request.headers.update(auth_headers(self.net, request.url))
        return request

    def close(self) -> None:
        self._session.close()

