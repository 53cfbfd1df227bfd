"""Every manifest problem exits 2 with one line naming file, model and field; never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seeder.spec import manifest
from seeder.errors import ManifestError
from tests.conftest import run_seeder

SHA = "a" * 64
CASES = {
    "toml syntax": ("[[models]\nname = 'x'", None, "invalid TOML"),
    "unknown top-level key": ("colour = 1", None, "colour"),
    "unknown layout": ("layout = 'flat'", None, "'flat'"),
    "hub in the hf-cache layout": ("layout = 'hf-cache'\n[[models]]\nname='hub'\nrepo='o/r'", ("hub", "name"),
                                   "own directory"),
    "unknown key": ("[[models]]\nname='a'\nrepo='o/r'\nbranch='x'", ("a", "branch"), "unknown key"),
    "url key on repo": ("[[models]]\nname='a'\nrepo='o/r'\nsha256='%s'" % SHA, ("a", "sha256"), "only valid with 'url'"),
    "missing name": ("[[models]]\nrepo='o/r'", ("#1", "name"), "missing"),
    "neither source": ("[[models]]\nname='a'", ("a", "repo"), "exactly one"),
    "both sources": ("[[models]]\nname='a'\nrepo='o/r'\nurl='https://x/y'", ("a", "repo"), "exactly one"),
    "duplicate name": ("[[models]]\nname='a'\nrepo='o/r'\n[[models]]\nname='a'\nrepo='o/s'", ("a", "name"), "duplicate"),
    "bad glob": ("[[models]]\nname='a'\nrepo='o/r'\ninclude=['[abc']", ("a", "include"), "bad glob"),
    "glob escapes": ("[[models]]\nname='a'\nrepo='o/r'\ninclude=['../*']", ("a", "include"), "bad glob"),
    "name escapes": ("[[models]]\nname='../etc'\nrepo='o/r'", ("../etc", "name"), "must start"),
    "absolute filename": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='%s'\nfilename='/etc/passwd'" % SHA,
                          ("a", "filename"), "absolute"),
    "dotdot filename": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='%s'\nfilename='..'" % SHA,
                        ("a", "filename"), "'..'"),
    "backslash filename": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='%s'\nfilename='a\\b'" % SHA,
                           ("a", "filename"), "backslash"),
    "NUL filename": ('[[models]]\nname="a"\nurl="https://h/x"\nsha256="%s"\nfilename="a\\u0000b"' % SHA,
                     ("a", "filename"), "NUL"),
    "bad sha256": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='abc'", ("a", "sha256"), "64 hexadecimal"),
    "negative size": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='%s'\nsize=-1" % SHA, ("a", "size"), "non-negative"),
    "not a url": ("[[models]]\nname='a'\nurl='ftp://h/x'\nsha256='%s'" % SHA, ("a", "url"), "http(s)"),
    "size on an s3 url": ("[[models]]\nname='a'\nurl='s3://bucket-a/x.bin'\nsize=10", ("a", "size"), "read from the bucket"),
    "bad mirror": ("[[models]]\nname='a'\nurl='https://h/x'\nsha256='%s'\nmirrors=['nope']" % SHA, ("a", "mirrors"), "http(s)"),
    "bad repo id": ("[[models]]\nname='a'\nrepo='o/r/../x'", ("a", "repo"), "repo id"),
    "include not list": ("[[models]]\nname='a'\nrepo='o/r'\ninclude='*.json'", ("a", "include"), "array of strings"),
    "models not array": ("models = 3", None, "array of tables"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_error_exits_2_with_clear_message(case: str, tmp_path: Path) -> None:
    text, where, needle = CASES[case]
    path = tmp_path / "models.toml"
    path.write_text(text)
    run = run_seeder("-m", str(path), "-t", str(tmp_path / "t"))
    assert run.code == 2, run
    errors = [e for e in run.events if e["level"] == "error"]
    assert len(errors) == 1, run
    message = errors[0]["event"]
    assert str(path) in message and needle in message
    if where:
        model, field = where
        assert f"model {model!r}" in message and f"field {field!r}" in message
    assert not (tmp_path / "t").exists()  # nothing written for a bad manifest


def test_missing_manifest_exits_2(tmp_path: Path) -> None:
    run = run_seeder("-m", str(tmp_path / "nope.toml"))
    assert run.code == 2 and "no such file" in run.err


def test_default_manifest_is_the_two_pinned_models() -> None:
    m = manifest.load(Path(__file__).parent.parent / "models.toml")
    assert [s.name for s in m.models] == ["embedding", "llm"]
    assert m.models[0].source.revision == "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    assert m.models[1].source.sha256 == "9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0"
    assert m.models[1].source.size == 668788096
    assert m.models[1].source.filename == "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
model_keys = st.sampled_from(["name", "repo", "url", "revision", "include", "exclude", "sha256", "size",
                              "filename", "mirrors", "other"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["models", "x"]),
                       st.lists(st.dictionaries(model_keys, toml_values, max_size=6), max_size=3) | toml_values,
                       max_size=2))
def test_any_parsed_toml_gives_a_manifest_or_a_manifest_error(data: dict) -> None:
    try:
        parsed = manifest.parse(data, Path("fuzz.toml"))
    except ManifestError as e:
        assert str(e).startswith("fuzz.toml")
        return
    for spec in parsed.models:
        assert spec.fingerprint


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_manifest_or_a_manifest_error(text: str) -> None:
    path = Path("/nonexistent/fuzz.toml")
    try:
        import tomllib

        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        manifest.parse(data, path)
    except ManifestError:
        pass
