"""The hub's rate limits: a 429's ``RateLimit`` reset is waited out, once for every part of a download,
capped by SEEDER_RATE_LIMIT_WAIT_MAX; and the request budget of locking and seeding, counted on the hub.

``conftest.FAST_NET`` caps seeder's own backoff at 0.3 s, so a gap of seconds between a 429 and the next
request, as the fake hub logged their arrival, can only come from honouring the header.
"""

from __future__ import annotations

import threading

import pytest

from seeder.errors import RateLimited
from seeder.fetch.retry import hold, not_before, rate_limit, transient
from seeder.settings import Network
from seeder.spec import lock as lockfile
from tests.conftest import blob, run_seeder, write_manifest

WINDOW = 3  # the RateLimit header's t=: seconds until the window resets
SLACK = 0.1  # absorbs clock granularity; the gap is a strict lower bound
LIMITED = {"RateLimit": f'"resolvers";r=0;t={WINDOW}', "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300'}
TOKEN = "hf_RateLimitToken0123456789abcdef"


def _repo(hub, tmp_path, files: dict[str, bytes], repo: str = "org/m", name: str = "m"):
    hub.add_repo(repo, files)
    return write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "{name}"\nrepo = "{repo}"\n')


def _file_requests(hub, name: str):
    return [r for r in hub.requests if r.method == "GET" and r.kind != "api" and r.path.endswith(name)]


def _limited(run) -> list[dict]:
    """The retry warnings; each must be for a rate limit."""
    warnings = [e for e in run.events if e["event"] == "retrying"]
    assert all(e.get("rate_limited") for e in warnings), warnings
    return warnings


def _one_rate_limited_resolve(hub, tmp_path, label: str, **env: str):
    """Seed a one-file repo whose first ``/resolve/`` is answered 429 with only a RateLimit header."""
    (tmp_path / label).mkdir()
    manifest = _repo(hub, tmp_path / label, {"config.json": b'{"hidden_size": 8}'})
    hub.clear_log()
    hub.add_fault("/config.json", "status", code=429, headers=LIMITED)
    target = tmp_path / label / "t"
    run = run_seeder("-m", str(manifest), "-t", str(target), hub=hub, timeout=90, **env)
    assert run.code == 0, run
    assert (target / "m" / "config.json").read_bytes() == b'{"hidden_size": 8}'
    assert run_seeder("verify", "-m", str(manifest), "-t", str(target), hub=hub).code == 0
    return run, _file_requests(hub, "config.json")


# -- (a) and (c): a rate-limited resolve waits for the window to reset, and says so once --------------------

def test_a_rate_limited_resolve_waits_for_the_reset_and_names_the_bucket(hub, tmp_path):
    run, requests = _one_rate_limited_resolve(hub, tmp_path, "anonymous")
    assert [r.status for r in requests] == [429, 200], [(r.status, r.range) for r in requests]
    gap = requests[1].started - requests[0].started
    assert WINDOW - SLACK <= gap < WINDOW + 10, f"asked again {gap:.3f}s after a 429 with t={WINDOW}"

    warnings = _limited(run)
    assert len(warnings) == 1, warnings
    assert warnings[0]["bucket"] == "resolvers" and warnings[0]["wait"] == WINDOW
    assert "HF_TOKEN" in warnings[0]["hint"]

    # With a token the advice to get one would be noise; and the token itself shows nowhere.
    run, requests = _one_rate_limited_resolve(hub, tmp_path, "token", HF_TOKEN=TOKEN)
    assert requests[1].started - requests[0].started >= WINDOW - SLACK
    warnings = _limited(run)
    assert len(warnings) == 1 and warnings[0]["bucket"] == "resolvers" and "hint" not in warnings[0], warnings
    line = next(line for line in run.err.splitlines() if "rate_limited" in line)
    assert "HF_TOKEN" not in line
    assert TOKEN not in run.err + run.out


# -- the resolver: huggingface_hub's API calls wait for the "api" window too ------------------------------

def test_the_resolver_waits_for_the_api_window(hub, tmp_path):
    manifest = _repo(hub, tmp_path, {"config.json": b"{}"})
    hub.add_fault("/api/models/org/m/revision/", "status", api=True, code=429,
                  headers={"RateLimit": '"api";r=0;t=2', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'})
    run = run_seeder("lock", "-m", str(manifest), hub=hub, timeout=60)
    assert run.code == 0, run
    calls = [r for r in hub.requests if r.kind == "api" and "/revision/" in r.path]
    assert [r.status for r in calls] == [429, 200]
    assert calls[1].started - calls[0].started >= 2 - SLACK
    warnings = _limited(run)
    assert [(e["bucket"], e["wait"], e["what"]) for e in warnings] == [("api", 2, "resolve")], warnings
    assert "HF_TOKEN" in warnings[0]["hint"]


def test_the_file_tree_is_retried_by_seeders_policy_alone(hub, tmp_path):
    # huggingface_hub retries paged listings itself (5 more tries, its own waits, plain-text warnings): inside
    # our attempts that would be up to 6 x 4 calls and lines that are not JSON in a JSON log.
    manifest = _repo(hub, tmp_path, {"config.json": b"{}"})
    hub.add_fault("/tree/", "status", api=True, code=429, headers={"RateLimit": '"api";r=0;t=1'})
    run = run_seeder("lock", "-m", str(manifest), hub=hub, timeout=60)
    assert run.code == 0, run
    trees = [r for r in hub.requests if r.kind == "api" and "/tree/" in r.path]
    assert [r.status for r in trees] == [429, 200] and trees[1].started - trees[0].started >= 1 - SLACK
    assert [(e["bucket"], e["wait"]) for e in _limited(run)] == [("api", 1)]
    assert all(line.startswith("{") for line in run.err.splitlines()), run.err

    hub.clear_log()
    hub.add_fault("/tree/", "status", 2, api=True, code=503)
    run = run_seeder("lock", "--upgrade", "-m", str(manifest), hub=hub, timeout=60, SEEDER_RETRIES="1")
    assert run.code == 3 and "after 2 attempts" in run.events[-1]["event"], run
    assert len([r for r in hub.requests if r.kind == "api" and "/tree/" in r.path]) == 2
    assert all(line.startswith("{") for line in run.err.splitlines()), run.err


# -- (d): a reset far away is capped ----------------------------------------------------------------------

def test_a_reset_beyond_the_cap_waits_only_the_cap(hub, tmp_path):
    manifest = _repo(hub, tmp_path, {"config.json": b"{}"})
    hub.add_fault("/config.json", "status", code=429, headers={"RateLimit": '"resolvers";r=0;t=100000'})
    run = run_seeder("-m", str(manifest), "-t", str(tmp_path / "t"), hub=hub, timeout=30,
                     SEEDER_RATE_LIMIT_WAIT_MAX="1.5")
    assert run.code == 0, run
    requests = _file_requests(hub, "config.json")
    assert [r.status for r in requests] == [429, 200]
    gap = requests[1].started - requests[0].started
    assert 1.5 - SLACK <= gap < 10, gap
    assert [e["wait"] for e in _limited(run)] == [1.5]


# -- (b): one wait for every part of a download ------------------------------------------------------------

def _inject_when(hub, name: str, done: int, stop: threading.Event) -> None:
    """Answer the next request for ``name`` with a 429 once ``done`` of its parts have arrived: mid-download,
    while the other connections are busy with parts of their own."""
    while not stop.wait(0.005):
        if sum(1 for r in _file_requests(hub, name) if r.status == 206 and r.finished) >= done:
            hub.add_fault(name, "status", code=429, headers=LIMITED)
            return


def test_a_rate_limited_part_holds_every_part_until_the_same_deadline(hub, tmp_path):
    data = blob(10 << 20, seed=7)
    manifest = _repo(hub, tmp_path, {"model.safetensors": data})
    hub.throttle_bps = 1 << 20  # a 512K part takes ~0.5 s: the other parts are mid-way when the 429 comes
    stop = threading.Event()
    injector = threading.Thread(target=_inject_when, args=(hub, "model.safetensors", 4, stop), daemon=True)
    injector.start()
    try:
        run = run_seeder("-m", str(manifest), "-t", str(tmp_path / "t"), hub=hub, timeout=120,
                         SEEDER_PART_SIZE="512K", SEEDER_MULTIPART_MIN="1M", SEEDER_CONNECTIONS="4")
    finally:
        stop.set()
        injector.join()
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.safetensors").read_bytes() == data
    assert run_seeder("verify", "-m", str(manifest), "-t", str(tmp_path / "t"), hub=hub).code == 0

    requests = _file_requests(hub, "model.safetensors")
    bad = [r for r in requests if r.status == 429]
    assert len(bad) == 1, [(r.status, r.range) for r in requests]
    bad = bad[0]
    assert bad.range, "the 429 must hit a Range part"
    # Requests sent before the client had read the 429 are no fault of its; after that, nobody asks until
    # the window resets: not the part that was refused, and not the others as their parts finish.
    quiet_from, quiet_to = bad.finished + 0.25, bad.started + WINDOW - SLACK
    during = [r for r in requests if quiet_from < r.started < quiet_to]
    assert not during, [(r.range, round(r.started - bad.started, 3)) for r in during]
    after = [r for r in requests if r.started >= quiet_to]
    assert len(after) >= 2, "the other parts had work left: the test would prove nothing"
    retry = [r for r in requests if r.started > bad.started and r.range == bad.range]
    assert retry and retry[0].started - bad.started >= WINDOW - SLACK
    assert len({r.conn for r in requests if r.status == 206}) >= 3  # really several connections

    warnings = _limited(run)
    assert len(warnings) == 1 and warnings[0]["bucket"] == "resolvers", warnings


# -- (e): the request budget -------------------------------------------------------------------------------

def test_locking_and_seeding_make_a_counted_number_of_requests(hub, tmp_path):
    hub.enable_cdn()  # LFS files redirect to the CDN, as on the real hub
    big = blob(3 << 20, seed=9)
    files = {"config.json": b"{}", "vocab.txt": b"a\nb\n", "tokenizer.json": b'{"v": 1}', "model.safetensors": big}
    commits = {"org/a": hub.add_repo("org/a", files),
               "org/b": hub.add_repo("org/b", {"config.json": b'{"b": 1}', "weights.bin": blob(200_000, seed=10)})}
    manifest = write_manifest(tmp_path / "models.toml",
                              '[[models]]\nname = "a"\nrepo = "org/a"\n\n[[models]]\nname = "b"\nrepo = "org/b"\n')

    run = run_seeder("lock", "-m", str(manifest), hub=hub)
    assert run.code == 0, run
    api = [(r.method, r.path) for r in hub.requests if r.kind == "api"]
    # Per repo: model_info at the revision (-> the commit), then the file tree at that commit, one page.
    assert sorted(api) == sorted([("GET", f"/api/models/{repo}/revision/main") for repo in commits]
                                 + [("GET", f"/api/models/{repo}/tree/{c}") for repo, c in commits.items()]), api
    assert len(hub.requests) == 4  # nothing else: no HEAD, no download

    hub.clear_log()
    run = run_seeder("-m", str(manifest), "-t", str(tmp_path / "t"), hub=hub,
                     SEEDER_PART_SIZE="256K", SEEDER_MULTIPART_MIN="1M", SEEDER_CONNECTIONS="4")
    assert run.code == 0, run
    # Files with the same bytes (both repos' .gitattributes) are fetched once: one digest, one download.
    digest = {f"{m.repo}/{f.path}": f.sha256 or f.git_oid
              for m in lockfile.read(tmp_path / "models.lock").models for f in m.files}
    assert {"org/a/model.safetensors", "org/b/weights.bin"} <= set(digest) and len(set(digest.values())) >= 6
    resolves = [r for r in hub.requests if r.kind == "resolve"]
    # One resolve per file: the bytes of a small file, or a 302 to the CDN for an LFS one ...
    assert sorted(digest[_repo_path(r.path)] for r in resolves) == sorted(set(digest.values()))
    assert all(r.method == "GET" for r in resolves)
    assert not [r for r in hub.requests if r.kind == "api"]  # ... and not one API call from a lock
    # ... and a large file's Range parts go straight to the CDN, not through the hub's resolvers.
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert len([r for r in cdn if r.path.endswith("model.safetensors")]) >= len(big) // (256 << 10)
    assert len(hub.requests) == len(resolves) + len(cdn)

    # Tree paging: one more API call per further page.
    hub.clear_log()
    hub.tree_page_size = 2
    run = run_seeder("lock", "--upgrade", "-m", str(manifest), hub=hub)
    assert run.code == 0, run
    trees = [r for r in hub.requests if r.kind == "api" and "/tree/" in r.path]
    entries = [len(m.files) for m in lockfile.read(tmp_path / "models.lock").models]  # all at the root: no dirs
    assert len(trees) == sum(-(-n // 2) for n in entries) > 2, (entries, len(trees))
    assert len([r for r in hub.requests if r.kind == "api"]) == 2 + len(trees)



def _repo_path(path: str) -> str:
    """``/org/a/resolve/<commit>/dir/file`` -> ``org/a/dir/file``."""
    repo, _, rest = path.lstrip("/").partition("/resolve/")
    return f"{repo}/{rest.split('/', 1)[1]}"


# -- the parts, one by one ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ('"resolvers";r=0;t=3', ("resolvers", 3.0)),
    ('"api";r=0;t=55', ("api", 55.0)),
    ('"api" ; r=0 ; t=55', ("api", 55.0)),
    ('api;r=0;t=7', ("api", 7.0)),  # a token, unquoted
    ('"pages";t=4', ("pages", 4.0)),  # no r: the window's reset is still the wait
    ('"api";r=5;t=55', None),  # requests left in this window: not why we were refused
    ('"api";r=12;t=9, "resolvers";r=0;t=4', ("resolvers", 4.0)),  # the bucket that ran out
    ('"a";r=0;t=2, "b";r=0;t=8', ("b", 8.0)),  # two ran out: the later reset
    ('"api";r=0', None),  # no reset: nothing to wait for
    ('"api";r=0;t=soon', None),
    ('"api";r=0;t=-3', None),
    ('"api";r=0;t=inf', None),
    ('', None),
    (None, None),
    ('garbage', None),
])
def test_the_ratelimit_header_parser(value, expected):
    assert rate_limit(value) == expected


def test_retry_after_comes_first_then_the_reset_then_nothing_and_all_are_capped():
    net = Network(rate_limit_wait_max=60.0, backoff_max=0.3)
    both = transient(429, {"Retry-After": "2", "RateLimit": '"api";r=0;t=5'}, "m", net, "http://h/x")
    assert both.retry_after == 2 and both.limit == RateLimited("http://h/x", "api")
    reset = transient(429, {"RateLimit": '"resolvers";r=0;t=5'}, "m", net, "http://h/x")
    assert reset.retry_after == 5 and reset.limit.bucket == "resolvers"
    bare = transient(429, {}, "m", net, "http://h/x")
    assert bare.retry_after is None and bare.limit == RateLimited("http://h/x", None)  # exponential backoff
    assert transient(429, {"RateLimit": '"api";r=0;t=100000'}, "m", net, None).retry_after == 60
    assert transient(503, {"Retry-After": "100000"}, "m", net, None).retry_after == 60
    # A 503 is a rate limit only when it names a bucket that ran out; otherwise a plain retry.
    assert transient(503, {"Retry-After": "1"}, "m", net, None).limit is None
    assert transient(503, {"RateLimit": '"api";r=3;t=9'}, "m", net, None).limit is None
    assert transient(503, {"RateLimit": '"api";r=0;t=9'}, "m", net, None).limit.bucket == "api"


def test_one_deadline_per_host_and_one_announcement_per_wait():
    a, b = "http://127.0.0.9:1/x", "http://127.0.0.9:1/other/path"
    assert not_before(a) == 0
    assert hold(a, 0.5) is True  # starts a wait: announce it
    assert hold(b, 0.2) is False  # the same host, already waiting: no second warning, no shorter deadline
    assert 0.3 < not_before(b) <= 0.5
    assert not_before("http://127.0.0.9:2/x") == 0  # another port is another host
    assert hold(a, 1.0) is False and 0.8 < not_before(a) <= 1.0  # extended, still the same wait
