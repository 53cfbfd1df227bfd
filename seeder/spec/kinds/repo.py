"""The ``repo`` kind: a Hugging Face repo at a revision, locked to a commit (served by sources/hub.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .common import globs, string

KIND = "repo"
LABEL = "'repo' (a Hugging Face repo)"
KEYS = {"repo", "revision", "include", "exclude"}
FILE_PINS: dict = {}
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_HEX40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class RepoSource:
    kind: ClassVar[str] = KIND
    repo: str
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def parse(entry: dict, fail) -> RepoSource:
    repo = string(entry, "repo", fail)
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise fail("repo", f"{repo!r} is not a Hugging Face repo id like 'org/name'")
    revision = string(entry, "revision", fail, "main")
    if any(c in revision for c in "\0\\") or ".." in revision or revision.startswith("/"):
        raise fail("revision", f"{revision!r} is not a valid branch, tag or commit")
    return RepoSource(repo=repo, revision=revision, **globs(entry, fail))


def lock_fields(m: dict, files: tuple, name: str, fail) -> dict:
    """A lock entry's fields of this kind, checked, as :class:`~seeder.spec.lock.LockedModel` takes them."""
    fields = {k: m.get(k) for k in ("repo", "revision", "commit")}
    if not all(isinstance(v, str) for v in fields.values()) or not _HEX40.fullmatch(fields["commit"]):
        raise fail(f"model {name!r}: repo, revision and a 40-hex commit are required")
    return fields


def lock_json(model) -> dict:
    return {"repo": model.repo, "revision": model.revision, "commit": model.commit}


def revision(model) -> str:
    """What ``status`` shows the model was asked at: the branch, tag or commit."""
    return model.revision
