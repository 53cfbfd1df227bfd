"""Edit ``models.toml`` for ``seeder add`` and ``seeder remove``: one ``[[models]]`` table appended or
dropped, every other byte (comments, order, spacing) left as the user wrote it.

The new text is always read back and compared with what was meant, so an edit that would change any
other model is refused rather than written.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ..errors import ManifestError
from .manifest import Manifest, parse

_HEADER = re.compile(r"[ \t]*\[\[[ \t]*models[ \t]*\]\][ \t]*(#.*)?")
_COMMENT = re.compile(r"[ \t]*#.*")
INLINE_WIDTH = 100
"""An array longer than this on one line is written one item per line."""


def render(table: dict, note: str | None = None) -> str:
    """One ``[[models]]`` table as TOML text, long arrays one item per line; ``note``, a comment line
    before the first array, says why the globs are what they are."""
    import tomlkit  # only add and remove edit a manifest

    t = tomlkit.table()
    for key, value in table.items():
        if isinstance(value, (list, tuple)) and note:
            t.add(tomlkit.comment(note))
            note = None
        if isinstance(value, (list, tuple)):
            array = tomlkit.array()
            array.extend(value)
            array.multiline(len(tomlkit.dumps({key: list(value)})) > INLINE_WIDTH)
            t.add(key, array)
        else:
            t.add(key, value)
    doc = tomlkit.document()
    aot = tomlkit.aot()
    aot.append(t)
    doc.append("models", aot)
    return tomlkit.dumps(doc)


def append_model(text: str, table: dict, path: Path, note: str | None = None) -> tuple[str, Manifest]:
    """``text`` with ``table`` appended as the last ``[[models]]``, and the manifest it parses to."""
    before = parse_text(text, path)
    body = text.rstrip("\r\n")
    new = (body + "\n\n" if body else "") + render(table, note)
    after = parse_text(new, path, editing=True)
    if after.models[:-1] != before.models or len(after.models) != len(before.models) + 1:
        raise ManifestError(path, "cannot append a [[models]] table to this file (is 'models' an inline "
                                  "array?); add the model by hand")
    return new, after


def remove_model(text: str, name: str, path: Path) -> tuple[str, Manifest]:
    """``text`` without the ``[[models]]`` table named ``name`` (and the comment lines just above it)."""
    before = parse_text(text, path)
    index = next((i for i, m in enumerate(before.models) if m.name == name), None)
    if index is None:  # the file changed since it was checked
        raise ManifestError(path, f"has no model named {name!r} any more")
    wanted = before.models[:index] + before.models[index + 1:]
    new = _cut_block(text, index, len(before.models))
    if new is None or parse_text(new, path).models != wanted:
        new = _tomlkit_remove(text, index)  # a layout the line scan does not follow: let tomlkit cut it
    after = parse_text(new, path)
    if after.models != wanted:
        raise ManifestError(path, f"cannot remove model {name!r} from this file automatically; edit it by hand")
    return new, after


def _cut_block(text: str, index: int, count: int) -> str | None:
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _HEADER.fullmatch(line.rstrip("\r\n"))]
    if len(headers) != count:  # a header inside a multi-line string, or tables written inline
        return None
    start = _comments_above(lines, headers[index])
    end = _comments_above(lines, headers[index + 1]) if index + 1 < count else len(lines)
    kept = lines[:start] + lines[end:]
    if index + 1 == count:  # the last table went: drop the blank lines it leaves at the end
        while kept and not kept[-1].strip():
            kept.pop()
    return "".join(kept)


def _comments_above(lines: list[str], header: int) -> int:
    """The first line of the comment block directly above a header (no blank line between); a block that
    reaches the top of the file is the file's own header (a ``#:schema`` line among it), kept."""
    start = header
    while start > 0 and _COMMENT.fullmatch(lines[start - 1].rstrip("\r\n")):
        start -= 1
    return start if start > 0 else header


def _tomlkit_remove(text: str, index: int) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    del doc["models"][index]
    return tomlkit.dumps(doc)


def parse_text(text: str, path: Path, editing: bool = False) -> Manifest:
    """The manifest ``text`` (read from ``path``) holds; ``editing``: the text is one seeder made."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        what = "the edited manifest would be" if editing else "is"
        raise ManifestError(path, f"{what} invalid TOML: {e}") from None
    return parse(data, path)
