"""``seeder add`` and ``seeder remove``: edit models.toml keeping every other byte, resolve only the new
model, and change nothing at all when anything goes wrong."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, blob, run_seeder, sha256, url_entry

# A sentence-transformers-like repo: the same weights four times over, plus what a server reads.
SERVED = {
    "model.safetensors": blob(30_000, seed=1),
    "config.json": b'{"hidden_size": 8}',
    "tokenizer.json": b'{"model": {}}',
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "vocab.txt": b"[PAD]\n[UNK]\n",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}
DUPLICATES = {
    "pytorch_model.bin": blob(30_000, seed=2),
    "tf_model.h5": blob(20_000, seed=3),
    "rust_model.ot": blob(20_000, seed=4),
    "onnx/model.onnx": blob(20_000, seed=5),
    "onnx/model_qint8_avx512.onnx": blob(12_000, seed=6),
    "openvino/openvino_model.bin": blob(12_000, seed=7),
    "openvino/openvino_model.xml": b"<xml/>",
    "README.md": b"# mini\n",
    ".gitattributes": b"*.bin filter=lfs\n",
}

# Comments and layout a person wrote: all of it must survive an add and a remove.
HEADER = """\
# Our models. Keep this list short: every pod downloads it.
#   (indented comment, kept as is)

"""


@pytest.fixture
def project(hub, tmp_path: Path) -> Path:
    """A manifest with a URL model, commented by hand, and a repo model whose branch has moved on since
    `seeder lock` pinned it: re-resolving it would change its lock entry."""
    data = blob(5000, seed=9)
    url = hub.add_file("weights/w.bin", data)
    hub.add_repo("org/mini", SERVED | DUPLICATES)
    hub.add_repo("org/moving", {"config.json": b"{}"})
    manifest = tmp_path / "models.toml"
    manifest.write_text(HEADER + "# the first model\n" + url_entry("first", url, data).replace(
        'name = "first"', 'name   =   "first"    # odd spacing, on purpose')
        + '\n[[models]]\nname = "moving"\nrepo = "org/moving"   # follows main\n')
    run = run_seeder("lock", "-m", str(manifest), hub=hub)
    assert run.code == 0, run
    hub.add_repo("org/moving", {"config.json": b'{"newer": true}'})
    return manifest


def _files(project: Path) -> tuple[bytes, bytes]:
    return project.read_bytes(), project.with_suffix(".lock").read_bytes()


def _entry(lock_text: bytes, name: str) -> str:
    """A model's entry as the lock file spells it (indentation and all)."""
    data = json.loads(lock_text)
    index = [m["name"] for m in data["models"]].index(name)
    return "\n".join("    " + line for line in json.dumps(data["models"][index], indent=2).splitlines())


def test_add_repo_keeps_one_weight_format_and_every_other_byte(hub, project: Path, tmp_path: Path):
    before_toml, before_lock = _files(project)
    hub.clear_log()
    run = run_seeder("add", "org/mini", "-m", str(project), hub=hub)
    assert run.code == 0, run
    after_toml, after_lock = _files(project)
    assert not [r.path for r in hub.requests if "org/mini" not in r.path]  # only the new model was resolved

    # The user's text is untouched; the new table comes after it.
    assert after_toml.startswith(before_toml.rstrip(b"\n") + b"\n\n[[models]]\nname = \"mini\"\nrepo = \"org/mini\"\n")
    # The other models' lock entries are the same text, byte for byte: "moving" keeps its old commit.
    assert _entry(before_lock, "first").encode() in after_lock and _entry(before_lock, "moving").encode() in after_lock
    locked = json.loads(after_lock)["models"]
    assert [m["name"] for m in locked] == ["first", "moving", "mini"]
    assert sorted(f["path"] for f in locked[2]["files"]) == sorted(SERVED)  # no .bin, .h5, .ot, onnx, openvino
    # The choice was shown, and what was added: files, bytes, commit.
    assert "weights as safetensors" in run.out and "*.bin" in run.out and "onnx/**" in run.out
    assert f"commit {locked[2]['commit']}" in run.out and "7 files" in run.out and "model.safetensors" in run.out

    # The lock is current for the edited manifest, and seeds exactly those files.
    assert run_seeder("lock", "--locked", "-m", str(project), hub=hub).code == 0
    seeded = run_seeder("--locked", "-m", str(project), "-t", str(tmp_path / "t"), hub=hub)
    assert seeded.code == 0, seeded
    target = tmp_path / "t" / "mini"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(SERVED)
    assert (target / "model.safetensors").read_bytes() == SERVED["model.safetensors"]


def test_the_readme_describes_the_exclude_list_seeder_add_writes(hub, project: Path):
    run = run_seeder("add", "org/mini", "-m", str(project), hub=hub)
    assert run.code == 0, run
    text = project.read_text()
    exclude = tomllib.loads(text)["models"][-1]["exclude"]  # in force, not a comment a parser skips
    readme = (ROOT / "README.md").read_text()
    paragraph = " ".join(readme[readme.index("`seeder add` appends"):].split("\n\n")[0].split())
    named = re.findall(r"`([^`]+)`", paragraph.split("other formats' weights (")[1].split(")")[0])
    assert named and set(named) <= set(exclude), (named, exclude)
    note = re.search(r"\(`(# seeder add: [^`…]+)…`\)", paragraph)
    assert note and re.search(f"\n{re.escape(note.group(1))}[^\n]*\nexclude = \\[", text), text  # just above it
    assert "commented" not in paragraph  # what it used to say: a commented list would take every format


def test_all_files_include_name_and_revision(hub, project: Path):
    old = hub.add_repo("org/mini", {"config.json": b"{}", "model.safetensors": b"old"}, branch="v1")
    run = run_seeder("add", "org/mini", "--all-files", "--name", "everything", "-m", str(project), hub=hub)
    assert run.code == 0, run
    run = run_seeder("add", "org/mini", "--name", "json-only", "--revision", "v1", "--include", "*.json",
                     "-m", str(project), hub=hub)
    assert run.code == 0, run
    models = {m["name"]: m for m in json.loads(project.with_suffix(".lock").read_text())["models"]}
    assert sorted(f["path"] for f in models["everything"]["files"]) == sorted(SERVED | DUPLICATES)
    assert [f["path"] for f in models["json-only"]["files"]] == ["config.json"]
    assert models["json-only"]["commit"] == old and models["json-only"]["revision"] == "v1"
    text = project.read_text()
    assert 'name = "everything"\nrepo = "org/mini"\n\n' in text  # --all-files: no include/exclude at all
    assert 'revision = "v1"\ninclude = ["*.json"]\n' in text
    assert run_seeder("lock", "--locked", "-m", str(project), hub=hub).code == 0


def test_add_url_names_it_after_the_file(hub, project: Path):
    data = blob(7000, seed=11)
    url = hub.add_file("gguf/tiny-chat.Q4_K_M.gguf", data)
    run = run_seeder("add", url, "--sha256", sha256(data), "-m", str(project), hub=hub)
    assert run.code == 0, run
    text = project.read_text()
    assert f'[[models]]\nname = "tiny-chat.Q4_K_M"\nurl = "{url}"\nsha256 = "{sha256(data)}"\n' in text
    entry = json.loads(project.with_suffix(".lock").read_text())["models"][-1]
    assert entry["files"] == [{"path": "tiny-chat.Q4_K_M.gguf", "size": 7000, "sha256": sha256(data)}]
    assert "\n  1 file, 6.8 KiB\n" in run.out and url in run.out  # not "1 files"


def test_add_creates_a_missing_manifest(hub, tmp_path: Path):
    hub.add_repo("org/mini", SERVED)
    manifest = tmp_path / "new" / "models.toml"
    manifest.parent.mkdir()
    run = run_seeder("add", "org/mini", "-m", str(manifest), hub=hub)
    assert run.code == 0, run
    assert manifest.read_text().startswith("#") and manifest.with_suffix(".lock").exists()
    assert run_seeder("lock", "--locked", "-m", str(manifest), hub=hub).code == 0


@pytest.mark.parametrize("args, code, needle", [
    (["org/mini", "--name", "first"], 2, "already has a model named 'first'"),
    (["org/nope"], 3, "not found"),
    (["org/mini", "--include", "[abc"], 2, "bad glob"),
    (["org/mini", "--exclude", "../*"], 2, "bad glob"),
    (["org/mini", "--include", "*.nothing"], 2, "match no file"),
    (["org/mini", "--sha256", "a" * 64], 2, "--sha256 does not apply"),
    (["org/mini", "--all-files", "--include", "*.json"], 2, "not both"),
    (["https://example.invalid/x.bin", "--revision", "main"], 2, "--revision does not apply"),
    (["org/mini", "--no-such-flag"], 2, "unrecognized arguments"),
    (["org/mini", "--name", "../up"], 2, "must start with"),
    (["org/ggufs"], 2, "pick one with --include"),
    (["not a repo"], 2, "not a Hugging Face repo id"),
])
def test_a_failed_add_changes_neither_file(args, code, needle, hub, project: Path):
    hub.add_repo("org/ggufs", {"a.Q4_K_M.gguf": b"1", "a.Q8_0.gguf": b"2", "config.json": b"{}"})
    before = _files(project)
    hub.clear_log()
    run = run_seeder("add", *args, "-m", str(project), hub=hub)
    assert run.code == code, run
    assert needle in run.err, run
    assert _files(project) == before
    assert sorted(p.name for p in project.parent.iterdir()) == ["models.lock", "models.toml"]  # no temp file left
    if code == 2 and "match no file" not in needle and "pick one" not in needle:
        assert hub.requests == []  # refused before asking the hub anything


def test_remove_drops_the_model_and_its_comment_and_nothing_else(hub, project: Path):
    clean_toml, clean_lock = _files(project)
    assert run_seeder("add", "org/mini", "--include", "*.json", "-m", str(project), hub=hub).code == 0
    with_mini = project.read_text()
    project.write_text(with_mini + "\n# the last one, by hand\n[[models]]\nname = \"last\"  # kept\nrepo = \"org/mini\"\n"
                       "include = [\"config.json\"]\n")
    assert run_seeder("lock", "-m", str(project), hub=hub).code == 0
    lock_before = project.with_suffix(".lock").read_bytes()

    run = run_seeder("remove", "mini", "-m", str(project))
    assert run.code == 0, run
    assert "removed 'mini'" in run.out and "seeder refresh" in run.out
    text = project.read_text()
    assert text == clean_toml.decode() + "\n# the last one, by hand\n[[models]]\nname = \"last\"  # kept\n" \
        "repo = \"org/mini\"\ninclude = [\"config.json\"]\n"
    lock_after = project.with_suffix(".lock").read_bytes()
    assert [m["name"] for m in json.loads(lock_after)["models"]] == ["first", "moving", "last"]
    assert all(_entry(lock_before, name).encode() in lock_after for name in ("first", "moving", "last"))
    assert run_seeder("lock", "--locked", "-m", str(project), hub=hub).code == 0

    # Removing the last one again gives back the files as they were before any of this.
    assert run_seeder("remove", "last", "-m", str(project)).code == 0
    assert _files(project) == (clean_toml, clean_lock)


def test_add_then_remove_is_byte_for_byte_a_no_op(hub, project: Path):
    before = _files(project)
    assert run_seeder("add", "org/mini", "-m", str(project), hub=hub).code == 0
    assert _files(project) != before
    assert run_seeder("remove", "mini", "-m", str(project)).code == 0
    assert _files(project) == before


def test_remove_an_unknown_model_changes_nothing(project: Path):
    before = _files(project)
    run = run_seeder("remove", "nope", "-m", str(project))
    assert run.code == 2 and "no model named 'nope'" in run.err and "first" in run.err, run
    assert _files(project) == before
