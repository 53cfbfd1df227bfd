"""Mutation testing of the integrity-critical code (issue #15): ``.venv/bin/python -m tests.mutation``.

Slow (tens of minutes), so not part of ``.ci/run``. What is mutated, which tests judge each module and
which survivors are explained equivalents live in ``modules.toml`` and ``equivalent.toml`` beside this
file; docs/testing.md has the results.

The tool is cosmic-ray (``pip install -e '.[mutation]'``), driven through its API: it writes each mutant
into the module file itself, so everything happens in a copy of the working tree (``--workdir``, by
default /tmp/seeder-mutation): the checkout is never touched. Tests run one at a time (one worker), with
``PYTHONPATH`` on the copy so the ``python -m seeder`` subprocesses the tests start run the mutant too.

    python -m tests.mutation                   # every module in modules.toml, from scratch
    python -m tests.mutation integrity partial # some of them (by name)
    python -m tests.mutation --resume          # go on where an interrupted run stopped
    python -m tests.mutation --list            # count the mutants in scope, run nothing

Exit status: 0 when every survivor is listed in equivalent.toml, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class Module:
    name: str
    path: str
    functions: list[str]
    tests: list[str]
    note: str = ""


@dataclass
class Outcome:
    killed: int = 0
    survived: list[dict] = field(default_factory=list)
    incompetent: int = 0
    timeouts: int = 0
    seconds: float = 0.0


def load_config() -> tuple[list[Module], list[re.Pattern], list[dict]]:
    cfg = tomllib.loads((HERE / "modules.toml").read_text())
    modules = [Module(**m) for m in cfg["module"]]
    operators = [re.compile(p) for p in cfg["operators"]]
    equivalent = tomllib.loads((HERE / "equivalent.toml").read_text()).get("equivalent", [])
    return modules, operators, equivalent


# -- the copy -----------------------------------------------------------------------------------------------

def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, ignored files left out), without caches."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def scopes(source: str) -> dict[str, tuple[int, int]]:
    """Qualified name (``Class.method``, ``outer.inner``) -> (first line, last line) of every def."""
    out: dict[str, tuple[int, int]] = {}

    def walk(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out[name] = (first, child.end_lineno)
                walk(child, name + ".")

    walk(ast.parse(source), "")
    return out


def annotations(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the type annotations are: with ``from __future__ import annotations`` they are never
    evaluated, so a mutant there (``bytes | memoryview`` -> ``bytes & memoryview``) cannot change anything."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            found = [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x]
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found = [node.annotation]
        else:
            continue
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in found if n is not None]
    return spans


def function_at(ranges: dict[str, tuple[int, int]], line: int) -> str | None:
    """The innermost def holding ``line``."""
    best = None
    for name, (a, b) in ranges.items():
        if a <= line <= b and (best is None or a >= ranges[best][0]):
            best = name
    return best


def in_scope(function: str | None, line: str, wanted: list[str]) -> bool:
    """``wanted``: ``name`` (the function and the functions nested in it, like retrying's wait and
    before_sleep) or ``name:text`` (only its lines that contain ``text``)."""
    for entry in wanted:
        name, _, text = entry.partition(":")
        if function is not None and (function == name or function.startswith(name + ".")) and text in line:
            return True
    return False


# -- one module ---------------------------------------------------------------------------------------------

def test_command(module: Module) -> str:
    args = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *module.tests]
    return shlex.join([sys.executable, *args])


def baseline(module: Module, tree: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run(shlex.split(test_command(module)), cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{module.name}: the tests fail without any mutation:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return time.monotonic() - started


def init_session(module: Module, session: Path, operators: list[re.Pattern]) -> int:
    """Generate every mutant of the module, then skip those out of scope: returns how many are in it."""
    from cosmic_ray.commands import init
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    session.unlink(missing_ok=True)
    source = Path(module.path).read_text()
    ranges, lines = scopes(source), source.splitlines()
    typed = annotations(source) if "from __future__ import annotations" in source else []
    kept = 0
    with use_db(str(session), WorkDB.Mode.create) as db:
        init([Path(module.path)], db, {})
        skipped = []
        for item in db.pending_work_items:
            (mutation,) = item.mutations
            function = function_at(ranges, mutation.start_pos[0])
            pos = tuple(mutation.start_pos)
            if (in_scope(function, lines[mutation.start_pos[0] - 1], module.functions)
                    and any(p.fullmatch(mutation.operator_name) for p in operators)
                    and not any(a <= pos < b for a, b in typed)):
                kept += 1
            else:
                skipped.append(item.job_id)
        db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="out of scope"))
    return kept


def run_session(module: Module, session: Path, timeout: float) -> None:
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db

    command = test_command(module)
    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
        done = sum(r.worker_outcome.value != "skipped" for _, r in db.completed_work_items)
        total = done + len(pending)
        for item in pending:
            started = time.monotonic()
            result = mutate_and_test(item.mutations, command, timeout)
            db.set_result(item.job_id, result)
            done += 1
            (m,) = item.mutations
            print(f"  [{done}/{total}] {m.operator_name.removeprefix('core/')} line {m.start_pos[0]}: "
                  f"{result.test_outcome or result.worker_outcome} ({time.monotonic() - started:.1f}s)", flush=True)


def changed_lines(diff: str) -> tuple[str, str]:
    old = [line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    new = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(old), " / ".join(new)


def collect(module: Module, session: Path, ranges: dict[str, tuple[int, int]]) -> Outcome:
    from cosmic_ray.work_db import WorkDB, use_db

    out = Outcome()
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            outcome = str(result.worker_outcome.value)
            if outcome in ("skipped", "no-test"):
                continue
            test = result.test_outcome.value if result.test_outcome else None
            if test == "killed":
                out.killed += 1
                out.timeouts += result.output == "timeout"
            elif test == "survived":
                (m,) = item.mutations
                old, new = changed_lines(result.diff or "")
                out.survived.append({"module": module.path, "function": function_at(ranges, m.start_pos[0]),
                                     "operator": m.operator_name, "line_no": m.start_pos[0], "line": old,
                                     "mutant": new, "diff": result.diff})
            else:
                out.incompetent += 1
    return out


def explained(survivor: dict, equivalent: list[dict]) -> dict | None:
    for e in equivalent:
        if (e["module"], e["line"], e["mutant"]) == (survivor["module"], survivor["line"], survivor["mutant"]):
            return e
    return None


# -- the run ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="names from modules.toml (default: all)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/seeder-mutation"))
    ap.add_argument("--resume", action="store_true", help="keep the copy and the sessions; run what is pending")
    ap.add_argument("--list", action="store_true", help="count the mutants in scope and stop")
    args = ap.parse_args(argv)

    modules, operators, equivalent = load_config()
    names = {m.name for m in modules}
    if unknown := [n for n in args.modules if n not in names]:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    chosen = [m for m in modules if not args.modules or m.name in args.modules]

    workdir = args.workdir.resolve() / ("list" if args.list else "")  # counting never disturbs a run
    tree, originals = workdir / "tree", workdir / "originals"
    workdir.mkdir(parents=True, exist_ok=True)
    if not (args.resume and tree.exists()):
        copy_tree(tree)
        shutil.rmtree(originals, ignore_errors=True)
    for m in chosen:  # a run killed mid-mutant leaves the mutant in the copy: put the original back
        saved = originals / m.path
        if saved.exists():
            shutil.copy2(saved, tree / m.path)
        else:
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / m.path, saved)
    os.chdir(tree)
    os.environ["PYTHONPATH"] = str(tree)  # the seeder subprocesses of the tests import the mutant too
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

    results: dict[str, Outcome] = {}
    for m in chosen:
        session = workdir / f"{m.name}.sqlite"
        ranges = scopes(Path(m.path).read_text())
        if missing := [f for f in m.functions if f.partition(":")[0] not in ranges]:
            sys.exit(f"{m.name}: no function {', '.join(missing)} in {m.path}")
        if args.list:
            print(f"{m.name}: {init_session(m, workdir / f'{m.name}.list.sqlite', operators)} mutants in scope")
            continue
        if not (args.resume and session.exists()):
            count = init_session(m, session, operators)
            print(f"{m.name}: {count} mutants in scope ({m.path})", flush=True)
        took = baseline(m, tree)
        timeout = max(30.0, 5 * took)
        print(f"{m.name}: the tests take {took:.1f}s unmutated; timeout {timeout:.0f}s per mutant", flush=True)
        started = time.monotonic()
        run_session(m, session, timeout)
        results[m.name] = collect(m, session, ranges)
        results[m.name].seconds = time.monotonic() - started
    if args.list:
        return 0
    return report(chosen, results, equivalent, workdir)


def report(chosen: list[Module], results: dict[str, Outcome], equivalent: list[dict], workdir: Path) -> int:
    lines = ["| module | mutants | killed | by timeout | survived | explained | unexplained | incompetent | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    unexplained, survivors = [], []
    for m in chosen:
        o = results[m.name]
        ok = [s for s in o.survived if explained(s, equivalent)]
        bad = [s for s in o.survived if not explained(s, equivalent)]
        unexplained += bad
        survivors += o.survived
        total = o.killed + len(o.survived) + o.incompetent
        lines.append(f"| {m.path} | {total} | {o.killed} | {o.timeouts} | {len(o.survived)} | {len(ok)} | {len(bad)} | "
                     f"{o.incompetent} | {o.seconds / 60:.1f} |")
    text = "\n".join(lines)
    print("\n" + text)
    for s in survivors:
        e = explained(s, equivalent)
        print(f"\n{'explained' if e else 'UNEXPLAINED'}: {s['module']}:{s['line_no']} ({s['function']}, "
              f"{s['operator'].removeprefix('core/')})\n  {s['line']}\n  -> {s['mutant']}")
        if e:
            print(f"  why: {e['why']}")
    (workdir / "report.md").write_text(text + "\n")
    (workdir / "survivors.json").write_text(json.dumps(survivors, indent=1))
    print(f"\n{len(unexplained)} unexplained survivor(s); report: {workdir / 'report.md'}, "
          f"{workdir / 'survivors.json'}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
