"""``seeder.fetch.retry`` piece by piece: which answers are transient, what each refusal says, the hub repo
read off a resolve URL, and the retry loop itself (attempts, waits, warnings, one announcement per rate-limit
wait). test_policy.py and test_ratelimit.py time the policy on a real server and test the header parsers;
these pin the rest (written against the mutants tests/mutation found alive, issue #15)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from seeder import log
from seeder.errors import RateLimited, RemoteError, TransientError
from seeder.fetch.retry import (TOKEN_HINT, classify, hold, honour, is_transient, not_before, rate_limit,
                                retry_after, retrying, transient)
from seeder.fetch.transport import Response
from seeder.settings import Network

HUB = "https://hub.example"


@pytest.fixture
def events(capsys):
    """The JSON log lines written so far (``events()``), as a run with ``--log-format json`` writes them."""
    log.configure(fmt="json")
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    log.configure()


def test_which_statuses_are_transient():
    assert [s for s in range(100, 700) if is_transient(s)] == [408, 425, 429, *range(500, 600)]


def _classify(status: int, url: str, headers: dict | None = None, answered: str | None = None, **net):
    classify(Response(status, headers or {}, answered if answered is not None else url, False), url,
             Network(endpoint=HUB, **net))


@pytest.mark.parametrize("status", [200, 206, 304, 399])
def test_success_and_redirects_pass(status):
    _classify(status, f"{HUB}/x")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503, 599])
def test_transient_statuses_are_retryable_and_carry_the_wait(status):
    with pytest.raises(TransientError) as e:
        _classify(status, "https://cdn.example/x?sig=secret", {"Retry-After": "3"})
    assert str(e.value) == f"HTTP {status} from https://cdn.example/x"  # no signature in the message
    assert e.value.retry_after == 3


def test_a_rate_limit_names_who_answered_after_redirects():
    with pytest.raises(TransientError) as e:
        _classify(429, f"{HUB}/org/m/resolve/main/x", answered="https://cdn.example/x")
    assert e.value.limit == RateLimited("https://cdn.example/x", None, f"{HUB}/org/m/resolve/main/x")
    with pytest.raises(TransientError) as e:
        _classify(429, f"{HUB}/org/m/resolve/main/x", answered="")  # no final URL known: the one asked
    assert e.value.limit == RateLimited(f"{HUB}/org/m/resolve/main/x", None)


@pytest.mark.parametrize("status", [400, 410, 416, 499, 600])
def test_other_failures_are_final(status):
    with pytest.raises(RemoteError, match=f"^HTTP {status} for {HUB}/x$"):
        _classify(status, f"{HUB}/x?a=1")


def test_the_hubs_refusal_is_read_from_its_error_code():
    gated = {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model org/m is restricted."}
    for status in (401, 403, 404):
        with pytest.raises(RemoteError, match=r"^org/m is gated: accept its terms at https://hub.example/org/m"):
            _classify(status, f"{HUB}/org/m/resolve/main/w.bin", gated)
    with pytest.raises(RemoteError, match="HF_TOKEN has no access"):
        _classify(403, f"{HUB}/org/m/resolve/main/w.bin", gated, token="t")


@pytest.mark.parametrize("status", [401, 403])
def test_a_hub_refusal_without_a_code_suggests_the_token(status):
    with pytest.raises(RemoteError, match=f"access to {HUB}/org/m/resolve/main/x \\(HTTP {status}\\): a gated or "
                                          "private repo needs HF_TOKEN$"):
        _classify(status, f"{HUB}/org/m/resolve/main/x")
    with pytest.raises(RemoteError, match="check that HF_TOKEN may read it"):
        _classify(status, f"{HUB}/org/m/resolve/main/x", token="t")


def test_a_hub_404_without_a_code_is_not_found():
    with pytest.raises(RemoteError, match=f"^HTTP 404 for {HUB}/org/m/resolve/main/x: not found$"):
        _classify(404, f"{HUB}/org/m/resolve/main/x")


@pytest.mark.parametrize("status", [401, 403])
def test_another_servers_refusal_gets_no_hub_advice(status):
    gated = {"X-Error-Code": "GatedRepo"}
    with pytest.raises(RemoteError, match=f"^HTTP {status} for https://cdn.example/x: the server refused access$"):
        _classify(status, "https://cdn.example/x", gated)
    with pytest.raises(RemoteError, match="refused access; a signed URL may have expired$"):
        _classify(status, f"{HUB}/org/m/resolve/main/x", gated, answered="https://cdn.example/x?Expires=1")


@pytest.mark.parametrize("url, endpoint, repo", [
    (f"{HUB}/org/m/resolve/main/w.bin", HUB, "org/m"),
    (f"{HUB}/bert-base/resolve/main/w.bin", HUB, "bert-base"),  # a legacy repo without an org
    (f"{HUB}/org/resolve/resolve/main/w.bin", HUB, "org/resolve"),  # a repo called "resolve"
    (f"{HUB}/mirror/org/m/resolve/main/w.bin", f"{HUB}/mirror", "org/m"),  # the hub behind a path
    (f"{HUB}/mirror/org/m/resolve/main/w.bin", f"{HUB}/mirror/", "org/m"),
    (f"{HUB}/mirrored/org/m/resolve/main/w.bin", f"{HUB}/mirror", None),  # not under the endpoint's path
    (f"{HUB}/api/models/org/m", HUB, None),  # not a resolve URL
])
def test_the_repo_is_read_off_a_resolve_url(url, endpoint, repo):
    with pytest.raises(RemoteError) as e:
        classify(Response(404, {"X-Error-Code": "RepoNotFound"}, url, False), url, Network(endpoint=endpoint))
    assert str(e.value).startswith(f"{repo or 'the repo'} not found on "), str(e.value)


# -- the loop --------------------------------------------------------------------------------------------------

def _attempts(net: Network, failures: list[BaseException], **fields):
    """Run an operation failing with ``failures`` in turn (then succeeding); returns (calls, sleeps)."""
    calls, sleeps = [], []
    for attempt in retrying(net, "download", "m", "w.bin", sleep=sleeps.append, **fields):
        with attempt:
            calls.append(1)
            if len(calls) <= len(failures):
                raise failures[len(calls) - 1]
    return len(calls), sleeps


def test_transient_failures_are_retried_until_success(events):
    net = Network(attempts=4, backoff_max=0.0)
    assert _attempts(net, [TransientError("a"), TransientError("b")]) == (3, [0.0, 0.0])
    warnings = [e for e in events() if e["event"] == "retrying"]
    assert [(w["attempt"], w["error"], w["what"], w["model"], w["file"]) for w in warnings] == [
        (1, "a", "download", "m", "w.bin"), (2, "b", "download", "m", "w.bin")]


def test_attempts_run_out_and_the_last_error_is_raised():
    net = Network(attempts=3, backoff_max=0.0)
    calls, sleeps = [], []
    with pytest.raises(TransientError, match="^3$"):
        for attempt in retrying(net, "download", "m", sleep=sleeps.append):
            with attempt:
                calls.append(1)
                raise TransientError(str(len(calls)))
    assert len(calls) == 3 and len(sleeps) == 2


def test_other_errors_are_not_retried():
    net = Network(attempts=5, backoff_max=0.0)
    with pytest.raises(RemoteError):
        _attempts(net, [RemoteError("no")])
    with pytest.raises(ValueError):
        _attempts(net, [ValueError("bug")])


def test_the_wait_is_the_servers_when_it_asks_for_more(events):
    net = Network(attempts=3, backoff_max=0.0)
    assert _attempts(net, [TransientError("a", 1.234), TransientError("b")]) == (3, [1.234, 0.0])
    assert [w["wait"] for w in events() if w["event"] == "retrying"] == [1.23, 0.0]  # said to the 1/100 s


def test_fields_are_evaluated_when_the_warning_is_written(events):
    offset = iter([100, 200])
    net = Network(attempts=3, backoff_max=0.0)
    _attempts(net, [TransientError("a"), TransientError("b")], offset=lambda: next(offset), part=3)
    assert [(w["offset"], w["part"]) for w in events() if w["event"] == "retrying"] == [(100, 3), (200, 3)]


def test_a_rate_limit_is_announced_once_per_wait_with_the_bucket_and_the_hint(events):
    hub = f"https://hub{time.monotonic_ns()}.example"  # a host no earlier test waits on: the deadline is per host
    net = Network(endpoint=hub, attempts=3, backoff_max=0.0)
    url = f"{hub}/org/m/resolve/main/x"
    limited = TransientError("HTTP 429", 0.2, limit=RateLimited(url, "resolvers"))
    _attempts(net, [limited])
    (warning,) = [w for w in events() if w["event"] == "retrying"]
    assert (warning["rate_limited"], warning["bucket"], warning["hint"]) == (True, "resolvers", TOKEN_HINT)
    assert 0 < not_before(url) <= 0.2
    # Another part rate-limited by the same host while the wait runs: it waits too, and says nothing.
    _attempts(net, [TransientError("HTTP 429", 0.1, limit=RateLimited(url, "resolvers"))])
    assert [w for w in events() if w["event"] == "retrying"] == []


def test_a_rate_limit_answered_after_a_redirect_holds_both_hosts(events):
    net = Network(endpoint=HUB, attempts=2, backoff_max=0.0)
    n = time.monotonic_ns()  # hosts no earlier test is waiting on
    asked, answered = f"https://hub{n}.example/org/m/resolve/main/x", f"https://cdn{n}.example/x"
    _attempts(net, [TransientError("HTTP 429", 0.3, limit=RateLimited(answered, None, asked))])
    # The next request to the hub would be sent straight back to the CDN that is out of breath.
    assert 0 < not_before(asked) <= 0.3 and 0 < not_before(answered) <= 0.3
    assert len([w for w in events() if w["event"] == "retrying"]) == 1


def test_no_token_hint_off_the_hub_or_with_a_token(events):
    fresh = f"https://h{time.monotonic_ns()}.example"  # a host no earlier test is waiting on
    for endpoint, token in ((HUB, None), (fresh, "t")):
        net = Network(endpoint=endpoint, token=token, attempts=2, backoff_max=0.0)
        url = f"{fresh}/{token}"
        _attempts(net, [TransientError("HTTP 429", 0.0, limit=RateLimited(url, None))])
        (warning,) = [w for w in events() if w["event"] == "retrying"]
        assert warning["rate_limited"] is True and "hint" not in warning, (endpoint, token)


def test_a_rate_limit_of_the_api_client_is_the_hubs(events):
    # url None: the hub client's own call, on the hub by definition; nothing to hold.
    net = Network(endpoint=HUB, attempts=2, backoff_max=0.0)
    _attempts(net, [TransientError("HTTP 429", 0.0, limit=RateLimited(None, "api"))])
    (warning,) = [w for w in events() if w["event"] == "retrying"]
    assert (warning["bucket"], warning["hint"]) == ("api", TOKEN_HINT)


def test_honour_waits_out_the_hosts_deadline():
    url = f"http://127.0.0.8:{int(time.monotonic() * 1000) % 60000 + 1}/x"
    slept = []
    honour(url, slept.append)
    assert slept == []  # no deadline: no wait at all
    hold(url, 0.3)
    started = time.monotonic()
    honour(url)
    assert 0.25 <= time.monotonic() - started < 1.0
    assert not_before(url) == 0


def test_honour_follows_a_deadline_that_grows_meanwhile():
    url = f"http://127.0.0.7:{int(time.monotonic() * 1000) % 60000 + 1}/x"
    hold(url, 0.1)
    threading.Timer(0.05, lambda: hold(url, 0.3)).start()
    started = time.monotonic()
    honour(url)
    assert time.monotonic() - started >= 0.3


def test_hold_says_whether_a_wait_was_running():
    url = f"http://127.0.0.6:{int(time.monotonic() * 1000) % 60000 + 1}/x"
    assert hold(url, 0.05) is True
    assert hold(url, 0.05) is False
    time.sleep(0.1)
    assert hold(url, 0.05) is True  # the earlier one is over: a new wait
    assert hold("https://127.0.0.6/x", 1) is True  # another scheme and port: another host


def test_parsers_edge_cases():
    assert retry_after("nan") is None and retry_after("inf", cap=5) == 5
    assert retry_after("  ") is None
    assert rate_limit('"a";r=0;t=0') == ("a", 0.0)  # a window resetting now: go
    assert rate_limit('"a";r=-1;t=2') == ("a", 2.0)
    assert rate_limit('"a";R=0;T=2') == ("a", 2.0)  # parameter names in any case
    assert rate_limit('"a";r=x;t=2') is None
    assert rate_limit(', ;;, "a";r=0;t=2') == ("a", 2.0)  # items that are no item are passed over
    assert rate_limit('"x";r=0, "y";r=0;t=soon, "a";r=0;t=2') == ("a", 2.0)  # ... and items with no reset
    assert rate_limit('"a";r=0;t=5, "b";r=0;t=5') == ("a", 5.0)  # a tie: the first named
    assert transient(503, {}, "m", Network(), None).limit is None
