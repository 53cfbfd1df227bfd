"""How the CLI talks to people and to machines."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime

import pytest

from tests.conftest import ROOT, blob, run_seeder, seeder_env, sha256, url_entry, write_manifest


def _manifest(hub, tmp_path, size=3 << 20):
    data = blob(size, seed=6)
    url = hub.add_file("w.bin", data)
    return write_manifest(tmp_path / "models.toml", url_entry("m", url, data))


def test_terminal_gets_a_progress_bar_and_readable_lines(hub, tmp_path):
    m = _manifest(hub, tmp_path)
    hub.throttle_bps = 4 << 20
    text = _in_a_terminal(["-m", str(m), "-t", str(tmp_path / "t")], hub)
    assert "MiB/s" in text or "MB/s" in text  # the live bar's rate
    assert "summary" in text and not text.lstrip().startswith("{")  # console lines, not JSON


def test_the_progress_bar_counts_resumed_bytes_and_ends_at_100_percent(hub, tmp_path):
    data = blob(3 << 20, seed=6)
    m = _manifest(hub, tmp_path)
    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{hashlib.sha256(data).hexdigest()}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 2])  # what an interrupted run leaves: half the file
    hub.throttle_bps = 2 << 20
    text = _in_a_terminal(["-m", str(m), "-t", str(tmp_path / "t")], hub)
    assert hub.body_bytes() == len(data) - len(data) // 2  # it did resume
    bars = re.findall(r"(\d+)%\|", text)
    assert bars and bars[-1] == "100", bars  # it used to stop at the share that came over the wire
    assert "3.15M/3.15M" in text  # decimal sizes (3,145,728 bytes), like the MB/s beside them


def _in_a_terminal(args: list[str], hub, until=None, **env: str) -> str:
    """What a run writes to a terminal; with ``until``, the run gets a Ctrl-C once ``until(what it wrote)``."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a fresh pty is 0x0
    proc = subprocess.Popen([sys.executable, "-m", "seeder", *args], env=seeder_env(hub.url, TERM="xterm", **env),
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    out, stopped = b"", False
    while True:  # to the end, after a Ctrl-C too: a run blocked on a full terminal would never exit
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if until is not None and not stopped and until(out.decode(errors="replace")):
            proc.send_signal(signal.SIGINT)
            stopped = True
    os.close(primary)
    assert proc.wait(timeout=60) == (130 if stopped else 0), out[-2000:]
    return out.decode(errors="replace")


# A live bar's reading: position/total [elapsed<eta, rate], the rate known (tqdm shows "?" before it is).
_READING = re.compile(r"\| *([\d.]+)([kMG]?)/([\d.]+)([kMG]?) \[[\d:]+<([\d:]+), ([\d.]+)([kMG]?)B/s\]")
_SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}


def _readings(text: str) -> list[tuple[float, float, float, float]]:
    """(position, total, eta in seconds, rate) of each bar drawn with a rate, in order."""
    out = []
    for m in _READING.finditer(text):
        n, n_unit, total, total_unit, eta, rate, rate_unit = m.groups()
        seconds = sum(int(x) * 60 ** i for i, x in enumerate(reversed(eta.split(":"))))
        out.append((float(n) * _SCALE[n_unit], float(total) * _SCALE[total_unit], seconds,
                    float(rate) * _SCALE[rate_unit]))
    return out


@pytest.mark.parametrize("connections", ["1", "4"], ids=["one-stream", "parts"])
def test_after_a_resume_the_bar_starts_where_it_stopped_but_rates_only_this_runs_bytes(connections, hub, tmp_path):
    data = blob(24_000_000, seed=43)
    url = hub.add_file("big.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("x", url, data))
    args = ["-m", str(m), "-t", str(tmp_path / "t")]
    env = {"SEEDER_CONNECTIONS": connections, "SEEDER_PART_SIZE": str(1 << 20), "SEEDER_MULTIPART_MIN": str(1 << 20)}
    # A real partial: a third of the file, then a Ctrl-C a second before the rest would have come.
    hub.throttle_total_bps = 8_000_000
    proc = subprocess.Popen([sys.executable, "-m", "seeder", *args, "--log-format", "json"],
                            env=seeder_env(hub.url, **env), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while hub.body_bytes() < len(data) // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    if connections == "1":
        kept = part.stat().st_size
    else:
        kept = sum(b - a for a, b in json.loads(part.with_name(part.name + ".ranges").read_text())["done"])
    assert len(data) // 6 <= kept < len(data), kept
    # The first run's responses end at their next write; until then they would take turns on the slow link.
    while any(r.finished is None for r in hub.requests) and time.monotonic() < deadline:
        time.sleep(0.02)

    # The resume, over a link of 0.5 MB/s, until the bar has shown a rate (the rest would take ~20 s).
    link = hub.throttle_total_bps = 500_000
    hub.clear_log()
    readings = _readings(_in_a_terminal(args, hub, until=lambda text: _readings(text), **env))
    assert readings
    position, total, eta, rate = readings[0]
    assert total == pytest.approx(len(data), rel=0.01) and position >= kept * 0.99, (readings, kept)
    # A link of 0.5 MB/s serves at most its rate over the 0.1 s tqdm waits between readings, plus a 20 ms slot
    # per connection: 3x the link is out of reach. Counting the bytes on disk as this run's made it 40-100 MB/s.
    assert rate <= 3 * link, (readings, kept)
    assert eta >= (total - position) / (3 * link), (readings, kept)
    gets = [r for r in hub.requests if r.method == "GET"]
    assert gets and all(r.range_start is not None for r in gets)  # what came, came as a resume


def test_json_when_not_a_terminal_and_quiet_flag(hub, tmp_path):
    m = _manifest(hub, tmp_path, size=1000)
    proc = subprocess.run([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(tmp_path / "t")],
                          env=seeder_env(hub.url), capture_output=True, text=True)
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("{") for line in lines)
    quiet = run_seeder("-q", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert quiet.code == 0 and quiet.err == ""


def test_json_progress_events_carry_bytes_rate_and_eta(hub, tmp_path):
    m = _manifest(hub, tmp_path)
    hub.throttle_bps = 1 << 20
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, SEEDER_PROGRESS_INTERVAL="0.5")
    assert run.code == 0, run
    progress = [e for e in run.events if e["event"] == "progress"]
    assert progress and {"model", "file", "bytes", "total", "rate", "eta"} <= set(progress[0])
    summary = run.events[-1]
    assert {"files", "bytes_downloaded", "bytes_reused", "seconds", "throughput"} <= set(summary)


def test_json_progress_after_a_retry_rates_every_byte_this_run_moved(hub, tmp_path):
    """A dropped connection resumes with a Range request: the bytes before it are this run's too, and the rate
    that left them out (counting from the retry over the whole run's time) fell to half and less."""
    data = blob(8_000_000, seed=44)
    url = hub.add_file("big.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("x", url, data))
    hub.throttle_total_bps = 2_000_000
    hub.add_fault("big.bin", "reset", at=len(data) // 2)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, SEEDER_CONNECTIONS="1",
                     SEEDER_PROGRESS_INTERVAL="0.2")
    assert run.code == 0 and not hub.unfired_faults(), run
    assert [r.range_start for r in hub.requests if r.method == "GET"][1] > 0  # the retry resumed
    # Each event's rate is bytes over the time since the file began, so bytes / rate leads every event back to
    # that same start (within the moment between the reading and its timestamp).
    starts = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() - e["bytes"] / e["rate"]
              for e in run.events if e["event"] == "progress" and e["rate"]]
    after = [e for e in run.events if e["event"] == "progress" and e["bytes"] > len(data) // 2]
    assert after and max(starts) - min(starts) < 0.5, (starts, run.events)


def test_bad_flags_exit_2_with_one_line(tmp_path):
    for args, named in ((["--jobs", "0"], "--jobs"), (["--no-such-flag"], "--no-such-flag"),
                        (["verify", "--fast", "extra"], "extra")):
        proc = subprocess.run([sys.executable, "-m", "seeder", *args, "-m", str(tmp_path / "none.toml")],
                              env=seeder_env(None), capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.splitlines()  # no usage block, no traceback: the one line
        assert len(lines) == 1 and named in lines[0], (args, proc.stderr)
        assert proc.stdout == "", (args, proc.stdout)


def _closed_pipe() -> int:
    """The write end of a real pipe whose reader, a process, has closed its end and exited: what `| head`
    leaves once it has read enough, here always before seeder writes its first byte."""
    r, w = os.pipe()
    reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.close()"], stdin=r)
    os.close(r)
    assert reader.wait(timeout=30) == 0
    return w


@pytest.mark.parametrize("buffered", [False, True], ids=["PYTHONUNBUFFERED", "buffered"])
def test_a_reader_that_closes_early_ends_seeder_quietly_with_141(buffered, hub, tmp_path):
    m = _manifest(hub, tmp_path, size=1000)
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    env = {k: v for k, v in seeder_env(hub.url).items() if k != "PYTHONUNBUFFERED"}
    if not buffered:  # each write meets the closed pipe in the command; buffered, at the final flush
        env["PYTHONUNBUFFERED"] = "1"
    for args in (["status", "--json", "-m", str(m), "-t", str(target)], ["schema"], ["--version"], ["--help"]):
        for _ in range(3):
            w = _closed_pipe()
            try:
                proc = subprocess.run([sys.executable, "-m", "seeder", *args], env=env, stdout=w,
                                      stderr=subprocess.PIPE, text=True, timeout=60)
            finally:
                os.close(w)
            assert (proc.returncode, proc.stderr) == (141, ""), (args, proc.stderr[-2000:])

    # `seeder 2>&1 | head`: the logs' reader gone too. The seed stops, and the next run does the work.
    w = _closed_pipe()
    try:
        proc = subprocess.run([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(tmp_path / "u")], env=env,
                              stdout=w, stderr=w, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 141
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "u"), hub=hub).code == 0


@pytest.mark.parametrize("variable", ["SEEDER_CONNECT_TIMEOUT", "SEEDER_READ_TIMEOUT"])
def test_a_zero_timeout_is_refused(variable, tmp_path):
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"),
                     env=seeder_env(None, **{variable: "0"}))
    assert run.code == 2 and "more than 0 seconds" in run.err, run


@pytest.mark.parametrize("where, named, ref", [
    ({"SEEDER_CACHE": "x,$(SEEDER_BUCKET)"}, "SEEDER_CACHE", "$(SEEDER_BUCKET)"),
    (["--cache", "$(SEEDER_BUCKET)"], "--cache", "$(SEEDER_BUCKET)"),  # a pod's args are expanded as its env is
    ({"SEEDER_TARGET": "$(MODELS_DIR)/models"}, "SEEDER_TARGET", "$(MODELS_DIR)"),
    ({"HF_TOKEN": "$(HF_TOKEN_SECRET)"}, "HF_TOKEN", "$(HF_TOKEN_SECRET)"),  # read apart from the table
    ({"AWS_ENDPOINT_URL": "http://$(S3_HOST):8333"}, "AWS_ENDPOINT_URL", "$(S3_HOST)"),  # read by boto3
], ids=["env", "flag", "target", "token", "aws"])
def test_a_kubernetes_reference_left_unexpanded_exits_2_naming_it(where, named, ref, hub, tmp_path):
    """Kubernetes leaves ``$(VAR)`` as text when VAR is not in the container's env: taken literally, it made a
    directory named ``$(SEEDER_BUCKET)`` (or sent it to the hub as the token)."""
    m = _manifest(hub, tmp_path, size=1000)
    args = ["-m", str(m), *(where if isinstance(where, list) else [])]
    env = where if isinstance(where, dict) else {}
    if "SEEDER_TARGET" not in env:
        args += ["-t", "t"]
    run = run_seeder(*args, cwd=tmp_path, env=seeder_env(hub.url, **env))
    assert run.code == 2, run
    assert run.events[-1]["event"] == (f"{named}: {ref} was not expanded (Kubernetes leaves $(VAR) as text when "
                                       "VAR is not defined in the container's env)"), run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.toml"]  # no cache, no target, nothing named $(
    assert hub.requests == []


def test_help_names_every_flag_and_every_setting_the_code_reads():
    from seeder.cli import COMMANDS

    env = seeder_env(None)
    top = subprocess.run([sys.executable, "-m", "seeder", "--help"], env=env, capture_output=True, text=True).stdout
    seed = subprocess.run([sys.executable, "-m", "seeder", "seed", "--help"], env=env, capture_output=True,
                          text=True).stdout
    read = set(re.findall(r'"(SEEDER_[A-Z_]+|HF_[A-Z_]+)"', "".join(
        p.read_text() for p in (ROOT / "seeder").rglob("*.py")))) - {"SEEDER_FAILPOINT", "HF_HUB_DISABLE_TELEMETRY"}  # a test hook; set, not read
    assert read and not {v for v in read if v not in top}, sorted(v for v in read if v not in top)
    flags = set(re.findall(r"--[a-z][a-z-]+", seed)) - {"--help"}
    assert {"--jobs", "--connections", "--cache", "--offline", "--locked"} <= flags
    assert not {f for f in flags if f not in top}, sorted(f for f in flags if f not in top)
    assert all(c in top for c in COMMANDS) and "exit codes" in top


@pytest.mark.parametrize("setting, value, named", [
    ("flag", ["--jobs", "1000"], "--jobs"), ("flag", ["--jobs", "0"], "--jobs"),
    ("env", {"SEEDER_PART_SIZE": "1"}, "SEEDER_PART_SIZE"), ("env", {"SEEDER_PART_SIZE": "63K"}, "SEEDER_PART_SIZE")])
def test_jobs_and_part_size_have_documented_bounds(setting, value, named, hub, tmp_path):
    m = _manifest(hub, tmp_path)
    args, env = (value, {}) if setting == "flag" else ([], value)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), *args, env=seeder_env(hub.url, **env))
    assert run.code == 2 and named in run.err, run
    assert hub.requests == []
    helps = [subprocess.run([sys.executable, "-m", "seeder", *cmd, "--help"], env=seeder_env(None),
                            capture_output=True, text=True).stdout for cmd in ([], ["seed"])]
    assert "64K or more" in helps[0] and "(1-64)" in helps[1]  # the bounds are documented


@pytest.mark.parametrize("layout", ["cache inside target", "target inside cache", "the same"])
def test_a_cache_and_a_target_that_contain_each_other_are_refused(layout, hub, tmp_path):
    m = _manifest(hub, tmp_path)
    target, cache = {"cache inside target": ("models", "models/cache"), "target inside cache": ("c/models", "c"),
                     "the same": ("models", "models")}[layout]
    run = run_seeder("-m", str(m), "-t", str(tmp_path / target), "--cache", str(tmp_path / cache), hub=hub)
    assert run.code == 2 and "must not contain each other" in run.err, run
    assert not (tmp_path / cache / "blobs").exists() and hub.requests == []

    # A warm run needs no cache, and is refused all the same: the setting is wrong before a run needs it.
    assert run_seeder("-m", str(m), "-t", str(tmp_path / target), hub=hub).code == 0
    lock = (tmp_path / "models.lock").read_bytes()
    hub.clear_log()
    for command in ("seed", "refresh", "status"):
        run = run_seeder(command, "-m", str(m), "-t", str(tmp_path / target), "--cache", str(tmp_path / cache),
                         hub=hub)
        assert run.code == 2 and "must not contain each other" in run.err, (command, run)
    assert not (tmp_path / cache / "blobs").exists() and hub.requests == []  # refresh resolved nothing
    assert (tmp_path / "models.lock").read_bytes() == lock


@pytest.mark.parametrize("value", ["JSON", "Console", "json"])
def test_log_formats_are_case_insensitive(value, tmp_path):
    for args, env in ((["--log-format", value], {}), ([], {"SEEDER_LOG_FORMAT": value})):
        proc = subprocess.run([sys.executable, "-m", "seeder", "status", "-t", str(tmp_path), *args],
                              env=seeder_env(None, **env), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("query", ["", "?X-Amz-Signature=abc123secret&X-Amz-Expires=60"])
def test_a_refusal_from_a_server_that_is_not_the_hub_gives_no_hub_advice(query, hub, tmp_path):
    data = blob(10_000, seed=9)
    url = hub.add_file("elsewhere/w.bin", data) + query
    m = write_manifest(tmp_path / "models.toml", url_entry("w", url, data))
    hub.add_fault("w.bin", "status", code=403)
    # the hub endpoint is somewhere else: this server is just a server
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), env=seeder_env("http://127.0.0.1:9"))
    assert run.code == 3 and "the server refused access" in run.err, run
    assert "HF_TOKEN" not in run.err and "abc123secret" not in run.err
    assert ("signed URL may have expired" in run.err) == bool(query)


def test_json_logs_write_non_ascii_names_as_utf8(hub, tmp_path):
    data = blob(5_000, seed=10)
    url = hub.add_file("名前/重み.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("m", url, data) + 'filename = "重み.bin"\n')
    proc = subprocess.run([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(tmp_path / "t"),
                           "--log-format", "json"], env=seeder_env(hub.url, PYTHONIOENCODING="utf-8"),
                          capture_output=True, text=True, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    assert '"file": "重み.bin"' in proc.stderr and "\\u91cd" not in proc.stderr


def test_small_usage_mistakes_exit_2_with_a_clear_line(tmp_path):
    run = run_seeder("import", str(tmp_path / "missing.tar"), "-t", str(tmp_path / "t"))
    assert run.code == 2 and "missing.tar: no such bundle file" in run.err, run
    (tmp_path / "models.toml").write_text("")
    proc = subprocess.run([sys.executable, "-m", "seeder", "cache", "prune", "--cache", str(tmp_path / "c"),
                           "-m", str(tmp_path / "models.toml"), "--keep-days", "-1"], env=seeder_env(None),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "must not be negative" in proc.stderr, proc.stderr


def test_options_may_come_before_the_command_and_an_unknown_command_is_named(hub, tmp_path):
    m = _manifest(hub, tmp_path, size=1000)
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
    status = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), "status", "--json")
    assert status.code == 0 and json.loads(status.out)[0]["state"] == "complete", status
    deep = run_seeder("-t", str(tmp_path / "t"), "-m", str(m), "status", "--verify", "--json")
    assert deep.code == 0 and json.loads(deep.out)[0]["name"] == "m", deep  # status's own --verify
    bogus = run_seeder("bogus", "-t", str(tmp_path / "t"))
    assert bogus.code == 2 and "unknown command 'bogus'" in bogus.err and "status" in bogus.err, bogus


def test_status_and_seed_say_when_there_is_nothing_or_the_state_is_damaged(hub, tmp_path):
    run = run_seeder("status", "-m", str(tmp_path / "none.toml"), "-t", str(tmp_path / "nowhere"))
    assert run.code == 2 and "nothing to show" in run.err, run
    m = _manifest(hub, tmp_path, size=1000)
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
    (tmp_path / "t" / ".seeder" / "state.json").write_text("{not json")
    run = run_seeder("status", "-m", str(m), "-t", str(tmp_path / "t"))
    assert run.code == 0 and any("state is unreadable" in e["event"] for e in run.events), run
    empty = write_manifest(tmp_path / "empty.toml", "")
    run = run_seeder("-m", str(empty), "-t", str(tmp_path / "e"), hub=hub)
    assert run.code == 0 and any("lists no models" in e["event"] for e in run.events), run


def test_a_non_ascii_model_name_is_refused_saying_ascii(tmp_path):
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "modèle-ünï"\nurl = "https://x/a.bin"\n')
    run = run_seeder("lock", "-m", str(m))
    assert run.code == 2 and "ASCII letters" in run.err, run


def test_status_shows_an_interrupted_download_as_partial_with_its_bytes(hub, tmp_path):
    data = blob(3 << 20, seed=6)
    m = _manifest(hub, tmp_path)
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{hashlib.sha256(data).hexdigest()}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 1 << 20])  # what Ctrl-C leaves behind
    run = run_seeder("status", "--json", "-m", str(m), "-t", str(tmp_path / "t"))
    row = json.loads(run.out)[0]
    assert run.code == 0 and row["state"] == "partial" and "1.0 MiB of 3.0 MiB on disk" in row["detail"], run


def test_status_shows_a_download_interrupted_into_a_cache_as_partial(hub, tmp_path):
    m = _manifest(hub, tmp_path)
    cache, target = tmp_path / "cache", tmp_path / "t"
    hub.add_fault("w.bin", "reset", times=10, at=1 << 20)  # every attempt dies at 1 MiB: the run gives up
    run = run_seeder("-m", str(m), "-t", str(target), "--cache", str(cache), hub=hub)
    assert run.code == 3, run
    assert [p.stat().st_size for p in (cache / "tmp").glob("*.part")] == [1 << 20]  # the partial is the cache's
    assert not list((target / ".seeder" / "tmp").glob("*.part"))
    run = run_seeder("status", "--json", "-m", str(m), "-t", str(target), "--cache", str(cache))
    [row] = json.loads(run.out)
    assert run.code == 0 and row["state"] == "partial" and "1.0 MiB of 3.0 MiB on disk" in row["detail"], run
    # ... and the next run with that cache resumes it: the 2 MiB left, not the whole file again
    hub.clear_faults()
    hub.clear_log()
    assert run_seeder("-m", str(m), "-t", str(target), "--cache", str(cache), hub=hub).code == 0
    assert hub.body_bytes() == 2 << 20
