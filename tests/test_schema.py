"""The JSON Schema editors check models.toml against says what the manifest parser says: every file the
parser accepts passes it, and what it rejects, the parser rejects too, bar what JSON Schema cannot say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seeder.errors import ManifestError
from seeder.spec import manifest
from seeder.spec.kinds import KINDS
from tests.conftest import ROOT, run_seeder
from tests.test_manifest import CASES

SCHEMA_FILE = ROOT / "seeder" / "spec" / "models.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
MANIFESTS = [ROOT / "models.toml", ROOT / "deploy" / "kubernetes" / "base" / "models.toml"]


def _readme_examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_schema_is_a_valid_draft_7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_seeder_schema_prints_the_shipped_file():
    run = run_seeder("schema")
    assert run.code == 0, run
    assert run.out == SCHEMA_FILE.read_text()
    jsonschema.Draft7Validator.check_schema(json.loads(run.out))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_checked_in_manifests_point_editors_at_the_schema_and_pass_it(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#:schema "), first  # a taplo header directive: the file's first lines
    assert (path.parent / first.split(None, 1)[1]).resolve() == SCHEMA_FILE  # relative to the manifest, as taplo reads it
    VALIDATOR.validate(tomllib.loads(path.read_text()))


def _taplo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    taplo = Path(sys.executable).parent / "taplo"  # the test extra's taplo, the CLI of the language server
    return subprocess.run([str(taplo), "check", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_taplo_follows_the_schema_line_and_checks_with_it(tmp_path: Path):
    """What an editor does: the checked-in manifests pass; a user's copy of `seeder schema` output, named
    in a `#:schema` line, catches a mistake and passes once it is fixed."""
    run = _taplo(*(str(p) for p in MANIFESTS), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (tmp_path / "models.schema.json").write_text(run_seeder("schema").out)
    manifest = tmp_path / "models.toml"
    good = '#:schema ./models.schema.json\n[[models]]\nname = "m"\nurl = "https://h/x.bin"\nsha256 = "%s"\n'
    manifest.write_text(good % "abc")
    run = _taplo("models.toml", cwd=tmp_path)
    assert run.returncode != 0 and '"abc" does not match' in run.stderr, run.stderr
    manifest.write_text(good % ("a" * 64))
    run = _taplo("models.toml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr


def test_every_toml_example_in_the_readme_passes_the_schema_and_the_parser():
    examples = _readme_examples()
    assert len(examples) >= 2
    for text in examples:
        data = tomllib.loads(text)
        VALIDATOR.validate(data)
        manifest.parse(data, Path("README.md"))


def test_the_schema_knows_exactly_the_keys_the_parser_accepts():
    # The parser's key sets (its own and each kind's); reading them here is what keeps the schema from drifting.
    kinds = {kind: module.KEYS for kind, module in KINDS.items()}
    model = SCHEMA["definitions"]["model"]
    assert set(model["properties"]) == manifest._COMMON_KEYS.union(*kinds.values())
    assert model["required"] == ["name"]
    branches = {b["required"][0]: set(b["properties"]) for b in model["oneOf"]}
    assert branches == {kind: manifest._COMMON_KEYS | keys for kind, keys in kinds.items()}
    assert set(SCHEMA["properties"]) == manifest._TOP_KEYS and SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["layout"]["enum"] == list(manifest.LAYOUTS)


# test_manifest's rejected manifests that JSON Schema cannot reject: no TOML to check, a uniqueness
# across array items, a bracket count, a name reserved by the top-level layout.
INEXPRESSIBLE = {"toml syntax", "duplicate name", "bad glob", "hub in the hf-cache layout"}


@pytest.mark.parametrize("case", sorted(set(CASES) - INEXPRESSIBLE))
def test_the_schema_rejects_what_the_parser_rejects(case: str):
    data = tomllib.loads(CASES[case][0])
    with pytest.raises(ManifestError):
        manifest.parse(data, Path("x.toml"))
    assert not VALIDATOR.is_valid(data), case


VALUES = {
    "name": ["m", "a.b_c-1", "../x", "", "-x", "x" * 129, 3, "é"],
    "repo": ["org/m", "m", "o/r/../x", "a..b/c", "o/r/s", "", 5, "-o/r"],
    "revision": ["main", "v1.0", "c9745ed1d9f207416be6d2e6f8de32d1f16199bf", "a..b", "/x", "a\\b", "", " ", 1],
    "include": [[], ["*.json"], ["1_Pooling/*", "*.txt"], ["../*"], ["/abs"], ["a//b"], ["[abc"], ["a/"],
                [".seeder/x"], ["./x"], "*.json", [3], ["C:x"], ["onnx/**"]],
    "url": ["https://h/x.bin", "http://127.0.0.1:8/f", "HTTPS://h/x", "ftp://h/x", "nope", "s3://bucket-a/key",
            "s3://bucket-a/", "s3://B/k", "https://h", "", "S3://bucket-a/key", "s3://bucket-a/a/../k"],
    "sha256": ["a" * 64, "A" * 64, "abc", 1],
    "size": [0, 10, -1, True, 1.5, "10"],
    "filename": ["f.bin", "..", ".", "/etc/x", "a/b", "a\\b", "C:x", ".seeder", "", "a\x00b"],
    "mirrors": [[], ["https://m/x"], ["nope"], "https://m/x"],
    "s3": ["s3://bucket-a/prefix/", "s3://bucket-a", "S3://bucket-a/p", "s3://b/p", "s3://bucket-a/../x", "https://x/"],
    "other": [1],
}
VALUES["exclude"] = VALUES["include"]

# What the parser rejects and the schema lets through, because JSON Schema cannot say it (or not
# without a regular expression nobody could read): each is the parser's own message.
SCHEMA_CANNOT_SAY = ("unbalanced brackets", "has a '..' segment", "mirrors are for http(s) URLs",
                     "has no file name")

# One valid table per kind. The tests change them a key at a time (every change) and two at a time
# (at random): tables a mistake or two away from valid are where schema and parser could disagree.
BASES = ({"name": "m", "repo": "org/m", "revision": "v1.0", "include": ["*.json"]},
         {"name": "m", "url": "https://h/x.bin", "sha256": "A" * 64, "size": 0, "mirrors": []},
         {"name": "m", "url": "s3://bucket-a/key", "filename": "f.bin"},
         {"name": "m", "s3": "S3://bucket-a/p", "exclude": ["onnx/**"]})


def _varied(base: dict):
    changes = st.lists(st.sampled_from(sorted(VALUES)), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: st.sampled_from(VALUES[k]) for k in keys}))
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=1)
    return st.tuples(changes, dropped).map(lambda cd: {k: v for k, v in (base | cd[0]).items() if k not in cd[1]})


models = st.sampled_from(BASES).flatmap(_varied)


def _agree(entry: dict) -> None:
    data = {"models": [entry]}
    try:
        manifest.parse(data, Path("x.toml"))
        parser_error = None
    except ManifestError as e:
        parser_error = str(e)
    errors = [e.message for e in VALIDATOR.iter_errors(data)]
    if parser_error is None:
        assert not errors, (entry, errors)  # an editor must never flag a manifest seeder runs
    elif not errors:
        assert any(why in parser_error for why in SCHEMA_CANNOT_SAY), (entry, parser_error)


def test_schema_and_parser_agree_on_every_table_one_change_from_valid():
    for base in BASES:
        _agree(base)
        for key, values in VALUES.items():
            for value in values:
                _agree(base | {key: value})
            if key in base:
                _agree({k: v for k, v in base.items() if k != key})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models)
def test_schema_and_parser_agree_on_tables_two_changes_from_valid(entry: dict):
    _agree(entry)


def test_the_starting_tables_are_valid_and_from_the_pools():
    """The property above means little unless its starting points are accepted, and come from the pools."""
    for entry in BASES:
        assert all(v in VALUES[k] for k, v in entry.items())
        manifest.parse({"models": [entry]}, Path("x.toml"))
        VALIDATOR.validate({"models": [entry]})
