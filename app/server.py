"""Start-up check, then a tiny HTTP service. Standard library plus seeder's Python API only."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import seeder

from .loaders import BadModelFile, describe


class NotReady(Exception):
    """The models are not fit to serve from; the message says why."""


def load_models(models_dir: Path, lock: str | None = None) -> list[dict]:
    """Check ``models_dir`` against what seeder recorded (or against the models.lock at ``lock``), open every
    file; raise NotReady on any problem."""
    # Sizes only: hashing GBs at every start is the seeder's job (it verified them when it installed them).
    problems = seeder.check(models_dir, fast=True, lock=lock)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise NotReady(f"models in {models_dir} are missing or incomplete:\n{lines}\n"
                       "Run the seeder first (docker compose up seeder) or rebuild the image.")
    models = seeder.installed(models_dir, lock=lock)
    for model in models:
        if model.get("repo") and os.environ.get("HF_HUB_OFFLINE"):
            model["loaded_by_id"] = _by_id(model["repo"])
        for file in model["files"]:
            path = Path(model["path"]) / file["path"]
            try:
                file["header"] = describe(path)
            except (BadModelFile, OSError) as e:
                raise NotReady(f"cannot open {model['name']}/{file['path']}: {e}") from None
    return models


def _by_id(repo: str) -> str:
    """The commit an app asking for ``repo`` by id (no path, no revision) gets from HF_HOME, offline."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True)).name
    except Exception as e:  # noqa: BLE001 - any failure means the app could not load it
        raise NotReady(f"{repo} cannot be loaded by id from HF_HOME={os.environ.get('HF_HOME')}: {e}") from None


def make_handler(models: list[dict]) -> type[BaseHTTPRequestHandler]:
    body = {"/healthz": {"status": "ok", "models": len(models)}, "/models": models}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = body.get(self.path.split("?", 1)[0])
            status = 200 if payload is not None else 404
            data = json.dumps(payload if payload is not None else {"error": "not found"}, indent=1).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:
            if not self.path.startswith("/healthz"):  # the healthcheck would drown everything else
                super().log_message(format, *args)

    return Handler


def main() -> int:
    models_dir = Path(os.environ.get("MODELS_DIR", "/app/models"))
    port = int(os.environ.get("PORT", "8000"))
    # Where seeder did not write MODELS_DIR (image volumes of pushed models) there is no record to check
    # it against: MODELS_LOCK names the lock instead.
    try:
        models = load_models(models_dir, os.environ.get("MODELS_LOCK") or None)
    except NotReady as e:
        print(f"app: refusing to start: {e}", file=sys.stderr, flush=True)
        return 1
    server = ThreadingHTTPServer(("0.0.0.0", port), make_handler(models))
    # PID 1 in a container ignores SIGTERM unless it handles it: stop promptly on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    files = sum(len(m["files"]) for m in models)
    print(f"app: {len(models)} models ({files} files) ready in {models_dir}; "
          f"listening on :{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
