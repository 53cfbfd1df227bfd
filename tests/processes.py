"""What a fixture that runs a third-party server needs from the OS: a port to give it, a tie to the test
process, and a stop that always ends it. Used by tests/seaweed.py and tests/registry.py."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

# Below the kernel's ephemeral range (32768+ on Linux): an outgoing connection can't take a port between our
# check and the server's bind.
PORT_RANGE = (10000, 22700)


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(avoid: Iterable[int] = ()) -> int:
    """A port on 127.0.0.1 that nothing listens on now, from :data:`PORT_RANGE`."""
    rng = random.SystemRandom()
    avoid = set(avoid)
    for _ in range(10000):
        port = rng.randrange(*PORT_RANGE)
        if port not in avoid and bindable(port):
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL the child when the test process dies, so a killed pytest leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a server's Popen, or None where it can't work.

    PDEATHSIG fires when the spawning *thread* ends, not the process: only a child of the main thread is tied."""
    if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


def stop(procs: Iterable[subprocess.Popen], grace: float) -> None:
    """SIGTERM every process still running, SIGKILL what remains after ``grace`` seconds, and reap them all."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in running:
        if proc.poll() is None:
            proc.kill()
    for proc in running:
        proc.wait()
