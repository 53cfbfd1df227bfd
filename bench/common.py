"""What every part of the benchmark shares: paths, sizes, output, and everything it takes from seeder.

This is the one module of bench that names seeder's modules (the imports below and the script of
:data:`VERIFY_ONE_THREAD`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tests.fakehub is not installed anywhere, and the seeder being measured is the one in this checkout.
sys.path.insert(0, str(ROOT))

from seeder.settings import DEFAULT_MULTIPART_MIN, DEFAULT_PART_SIZE  # noqa: E402,F401
from seeder.store.s3 import blob_key  # noqa: E402,F401  (the bucket's layout: <prefix>/blobs/sha256/<hex>)
from tests.fakehub import FakeHub, load_dir  # noqa: E402,F401

try:  # SeaweedFS for the shared-cache scenario; tests/seaweed.py needs pytest, the store itself boto3 and `weed`
    from tests.seaweed import SeaweedFS, aws_free, weed_binary  # noqa: E402,F401
    SEAWEED_MISSING = ""
except ImportError as e:
    SeaweedFS = aws_free = weed_binary = None  # type: ignore[assignment,misc]
    SEAWEED_MISSING = f"tests/seaweed.py cannot be imported ({e})"

SEEDER = [sys.executable, "-m", "seeder"]
SEEDER_SOURCE = ROOT / "seeder"
# seeder's verify() with one thread, in a process of its own like every other timed command.
VERIFY_ONE_THREAD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from seeder.resolve import obtain_lock
    from seeder.spec.manifest import load
    from seeder.store import Target
    from seeder.store.verify import verify
    target = Target(Path(sys.argv[2]))
    lock = obtain_lock(load(Path(sys.argv[1])), target, locked=True, net=None)
    sys.exit(1 if verify(target, lock, jobs=1) else 0)
""")

MB = 1_000_000
MiB = 1 << 20
# The default manifest's sizes: all-MiniLM-L6-v2's files and TinyLlama's Q4_K_M GGUF.
EMBEDDING_FILES = {
    "model.safetensors": 90_868_376,
    "tokenizer.json": 466_247,
    "vocab.txt": 231_508,
    "config.json": 612,
    "tokenizer_config.json": 350,
    "special_tokens_map.json": 112,
    "sentence_bert_config.json": 53,
    "modules.json": 349,
    "config_sentence_transformers.json": 116,
    "1_Pooling/config.json": 190,
}
LLM_SIZE = 668_788_096


def say(*parts: object) -> None:
    print(*parts, flush=True)


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not available"
