"""Task files: one task per row (JSONL, a YAML list, or a JSON list), read into typed rows.

A whole file is checked before anything runs: every bad row gives one line (`FILE:LINE: field: why`)
and the file is refused as a whole (one TaskFileError carrying all the lines, exit code 2). The shipped
JSON Schema (`task.schema.json`) states the same structural rules for other tools; this module checks,
besides, what a schema cannot: that paths exist, that a commit resolves, that ids are unique.

`content_id` gives a task's starting tree content id (a git tree hash): two sources with the same files
have the same id whatever their commit ids, which is what grouping and pairing need.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from agentloop.errors import UsageError
from agentloop.files import read_input_text

SCHEMA_FILE = Path(__file__).with_name("task.schema.json")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ID_MAX = 200
FIELDS = ("id", "task", "source", "checks", "accept", "accept_files", "setup", "limits", "samples", "meta")
SOURCE_FIELDS = ("path", "commit")
LIMIT_FIELDS = ("max_turns", "max_tokens", "max_cost", "rollout_timeout", "verify_timeout")
INTEGER_LIMITS = ("max_turns", "max_tokens")
DEFAULT_COMMIT = "HEAD"


class TaskFileError(UsageError):
    """A task file with problems: one line per problem in `problems`, all of them in the message."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class TaskSource:
    """Where a task starts: a git repository at a commit, or a plain directory taken as it is."""

    path: Path
    commit: str | None = None  # as written (default HEAD) for a git repository; None for a plain directory
    revision: str | None = None  # the commit id it resolved to when the file was read

    @property
    def is_git(self) -> bool:
        return self.commit is not None


@dataclass(frozen=True)
class TaskLimits:
    """Per-task budget; None means the batch's (or the config's) default."""

    max_turns: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    rollout_timeout: float | None = None  # seconds for the agent's turns
    verify_timeout: float | None = None  # seconds for the hidden checks


@dataclass(frozen=True)
class TaskRow:
    """One validated row. `origin` says where it came from (`tasks.jsonl:3`) for later messages."""

    id: str
    task: str
    source: TaskSource
    checks: tuple[str, ...] = ()
    accept: tuple[str, ...] = ()
    accept_files: tuple[tuple[Path, str], ...] = ()  # (SRC, DEST relative to the workspace)
    setup: tuple[str, ...] = ()
    limits: TaskLimits = field(default_factory=TaskLimits)
    samples: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as it would be written in a task file (paths absolute, defaults left out)."""
        source: dict[str, Any] = {"path": str(self.source.path)}
        if self.source.commit is not None:
            source["commit"] = self.source.commit
        row: dict[str, Any] = {"id": self.id, "task": self.task, "source": source}
        for name in ("checks", "accept", "setup"):
            if getattr(self, name):
                row[name] = list(getattr(self, name))
        if self.accept_files:
            row["accept_files"] = {str(src): dest for src, dest in self.accept_files}
        limits = {k: getattr(self.limits, k) for k in LIMIT_FIELDS if getattr(self.limits, k) is not None}
        if limits:
            row["limits"] = limits
        if self.samples != 1:
            row["samples"] = self.samples
        if self.meta:
            row["meta"] = self.meta
        return row


@dataclass(frozen=True)
class Unparsed:
    """A row that could not be parsed, and why."""

    problem: str


@cache
def task_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one row."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


# -- reading a file ------------------------------------------------------------------------------


def load_tasks(path: str | Path) -> list[TaskRow]:
    """Every row of a task file, validated; TaskFileError lists every problem if there is any."""
    path = Path(path)
    label = path.name
    text = read_input_text(path, "task file", "a task file is UTF-8 JSONL or YAML")
    raw_rows, problems = parse_rows(text, label, _kind(path, text))
    base = path.resolve().parent
    rows: list[TaskRow] = []
    seen: dict[str, str] = {}
    for where, raw in raw_rows:
        if isinstance(raw, Unparsed):
            problems.append(f"{where}: {raw.problem}")
            continue
        row, row_problems = validate_row(raw, where, base)
        problems += row_problems
        if row is not None:
            if row.id in seen:
                problems.append(f"{where}: id: {row.id!r} is already the id of {seen[row.id]}; ids must be unique")
            else:
                seen[row.id] = where
                rows.append(row)
    if not raw_rows and not problems:
        problems.append(f"{label}: no tasks in it; each row is one task (see docs/batch.md)")
    if problems:
        raise TaskFileError(problems)
    return rows


def _kind(path: Path, text: str) -> str:
    """jsonl, json or yaml: by extension, else by the first character."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    start = text.lstrip()[:1]
    return "jsonl" if start == "{" else "json" if start == "[" else "yaml"


def parse_rows(text: str, label: str, kind: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """(where, raw row) pairs in file order (an Unparsed for a JSONL line that is not JSON) and the
    problems that stop the whole file from parsing. `where` is `FILE:LINE` (for a JSON list, `FILE:row N`)."""
    rows: list[tuple[str, Any]] = []
    problems: list[str] = []
    if kind == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{label}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((f"{label}:{number}", Unparsed(f"not JSON: {exc.msg} at column {exc.colno}")))
        return rows, problems
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [f"{label}:{exc.lineno}: not JSON: {exc.msg} at column {exc.colno}"]
        if not isinstance(data, list):
            return [], [f"{label}: must be a list of task rows (or JSONL: one row a line)"]
        return [(f"{label}:row {i}", item) for i, item in enumerate(data, 1)], []
    return _yaml_rows(text, label)


def _yaml_rows(text: str, label: str) -> tuple[list[tuple[str, Any]], list[str]]:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], [f"{label}{line}: not YAML: {problem}"]
    if data is None:
        return [], []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        return [], [f"{label}: must be a YAML list of task rows (`- id: ...`)"]
    return [(f"{label}:{item.start_mark.line + 1}", row) for item, row in zip(node.value, data, strict=True)], []


# -- one row -------------------------------------------------------------------------------------


def validate_row(raw: Any, where: str, base: Path, *, pinned: str | None = None) -> tuple[TaskRow | None, list[str]]:
    """A typed row, or None and one line per problem. Relative paths are taken from `base`.
    `pinned`: the commit id the driver resolved the row's `source.commit` to (a job's row carries it
    as its commit): taken as the revision without asking git again."""
    if not isinstance(raw, dict):
        return None, [f"{where}: a row must be an object (mapping) with id, task, source, ...; got {_kind_of(raw)}"]
    bad = _Problems(where)
    _unknown(raw, FIELDS, "", bad)
    for name in ("id", "task", "source"):
        if name not in raw:
            bad(name, "missing (every row needs id, task and source)")

    row_id = raw.get("id")
    if "id" in raw:
        if not isinstance(row_id, str):
            bad("id", f"must be a string, got {_kind_of(row_id)}")
        elif not ID_PATTERN.fullmatch(row_id) or len(row_id) > ID_MAX:
            bad("id", f"{row_id!r} is not a usable id: letters, digits, '.', '_', '-' only, starting with a "
                      f"letter or digit, at most {ID_MAX} characters (it names the rollout folder)")
    task = raw.get("task")
    if "task" in raw and not (isinstance(task, str) and task.strip()):
        bad("task", "must be a non-empty string: what the model is asked to do")

    source = _source(raw.get("source"), base, bad, pinned) if "source" in raw else None
    lists = {name: _commands(raw.get(name, _ABSENT), name, bad) for name in ("checks", "accept", "setup")}
    if not _nonempty(raw.get("checks"), list) and not _nonempty(raw.get("accept"), list):
        bad("checks", "no checks and no accept commands: nothing would tell a pass from a fail")
    accept_files = _accept_files(raw.get("accept_files"), base, source, bad)
    if _nonempty(raw.get("accept_files"), dict) and not _nonempty(raw.get("accept"), list):
        bad("accept_files", "given, but accept is empty: no hidden check would run on them")
    limits = _limits(raw.get("limits"), bad)
    samples = raw.get("samples", 1)
    if _integer(samples) is None or samples < 1:
        bad("samples", f"must be a whole number, 1 or more (the group size), got {samples!r}")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        bad("meta", f"must be an object (any keys), got {_kind_of(meta)}")
    if bad.lines or source is None:
        return None, bad.lines
    return TaskRow(id=row_id, task=task, source=source, checks=lists["checks"], accept=lists["accept"],
                   accept_files=accept_files, setup=lists["setup"], limits=limits, samples=int(samples),
                   meta=dict(meta), origin=where), []


class _Problems:
    """The problem lines of one row: `bad(field, why)` adds `WHERE: field: why`."""

    def __init__(self, where: str):
        self.where = where
        self.lines: list[str] = []

    def __call__(self, name: str, why: str) -> None:
        self.lines.append(f"{self.where}: {name}: {why}")


def _unknown(raw: dict[str, Any], known: tuple[str, ...], prefix: str, bad: _Problems) -> None:
    for key in raw:
        if key not in known:
            guess = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else f"; known: {', '.join(known)}"
            bad(f"{prefix}{key}", f"unknown field{hint}")


def _source(raw: Any, base: Path, bad: _Problems, pinned: str | None = None) -> TaskSource | None:
    if not isinstance(raw, dict):
        bad("source", f'must be an object like {{"path": "/abs/repo", "commit": "HEAD"}}, got {_kind_of(raw)}')
        return None
    before = len(bad.lines)
    _unknown(raw, SOURCE_FIELDS, "source.", bad)
    raw_path, commit = raw.get("path"), raw.get("commit")
    if not (isinstance(raw_path, str) and raw_path.strip()):
        bad("source.path", "missing or empty: a local git repository or a directory")
        return None
    if "commit" in raw and not (isinstance(commit, str) and commit.strip()):
        bad("source.commit", f"must be a non-empty string (a commit id, branch or tag), got {commit!r}")
        return None
    path = _resolve(raw_path, base)
    if not path.is_dir():
        bad("source.path", f"{path} is not a directory")
        return None
    if not (path / ".git").exists():
        if commit is not None:
            bad("source.commit", f"{path} is not a git repository (no .git in it); drop commit to take the "
                                 "directory as it is, or point source.path at the repository's top folder")
            return None
        return TaskSource(path) if len(bad.lines) == before else None
    commit = commit or DEFAULT_COMMIT
    revision = pinned if pinned is not None and commit == pinned else resolve_commit(path, commit)
    if revision is None:
        bad("source.commit", f"{commit!r} is not a commit in {path}")
        return None
    return TaskSource(path, commit, revision) if len(bad.lines) == before else None


_ABSENT = object()


def _commands(raw: Any, name: str, bad: _Problems) -> tuple[str, ...]:
    if raw is _ABSENT:
        return ()
    if not isinstance(raw, list):  # null too (a YAML `accept:` left empty): the schema says a list
        bad(name, f'must be a list of shell commands, e.g. ["python -m pytest -q"], got {_kind_of(raw)}')
        return ()
    out = []
    for i, item in enumerate(raw):
        if not (isinstance(item, str) and item.strip()):
            bad(f"{name}[{i}]", f"must be a non-empty command string, got {item!r}")
        else:
            out.append(item)
    return tuple(out)


def _accept_files(raw: Any, base: Path, source: TaskSource | None, bad: _Problems) -> tuple[tuple[Path, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        bad("accept_files", f'must be an object SRC -> DEST, e.g. {{"/abs/held-out/tests": "held"}}, '
                            f"got {_kind_of(raw)}")
        return ()
    out = []
    for src, dest in raw.items():
        name = f"accept_files[{src!r}]"
        if not str(src).strip():
            bad(name, "SRC is empty")
            continue
        src_path = _resolve(str(src), base)
        if not src_path.exists():
            bad(name, f"{src_path} does not exist")
            continue
        if source is not None and _within(src_path, source.path):
            bad(name, f"{src_path} is inside the source {source.path}: the model could read it; keep held-out "
                      "files outside")
            continue
        problem = relative_path_problem(dest)
        if problem:
            bad(name, f"DEST {dest!r} {problem}")
            continue
        out.append((src_path, dest))
    return tuple(out)


def relative_path_problem(dest: Any) -> str | None:
    """Why `dest` cannot be a place inside the workspace, or None."""
    if not isinstance(dest, str):
        return f"must be a string path relative to the workspace, got {_kind_of(dest)}"
    if not dest[:1].strip():
        return "must be a path relative to the workspace, e.g. \"held\""
    parts = PurePosixPath(dest).parts
    if dest.startswith("/") or ".." in parts:
        return "must stay inside the workspace: a relative path without '..'"
    return None


def _limits(raw: Any, bad: _Problems) -> TaskLimits:
    if raw is None:
        return TaskLimits()
    if not isinstance(raw, dict):
        bad("limits", f'must be an object, e.g. {{"max_turns": 4}}, got {_kind_of(raw)}')
        return TaskLimits()
    _unknown(raw, LIMIT_FIELDS, "limits.", bad)
    values: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        if name not in raw:
            continue
        value = raw[name]
        if name in INTEGER_LIMITS:
            number = _integer(value)
            if number is None or number < 1:
                bad(f"limits.{name}", f"must be a whole number, 1 or more, got {value!r}")
                continue
            values[name] = number
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value <= 0:
                bad(f"limits.{name}", f"must be a number above 0, got {value!r}")
                continue
            values[name] = float(value)
    return TaskLimits(**values)


def _nonempty(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and len(value) > 0


def _integer(value: Any) -> int | None:
    """An int from an int (or a float with no fraction, as JSON Schema counts integers); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _resolve(raw: str, base: Path) -> Path:
    path = Path(os.path.expanduser(raw))
    return (path if path.is_absolute() else base / path).resolve()


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# -- git -----------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)


def resolve_commit(repo: Path, commit: str) -> str | None:
    """The commit id `commit` names in `repo`, or None."""
    proc = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"], repo)
    return proc.stdout.strip() if proc.returncode == 0 else None


def content_id(source: TaskSource) -> str:
    """The git tree id of the task's starting content: `COMMIT^{tree}` for a git source; for a plain
    directory, the tree `git add -A` would make of it (files its .gitignore names left out). Equal
    content gives an equal id, whatever the commit ids."""
    if source.is_git:
        proc = _git(["rev-parse", "--verify", "--quiet", f"{source.revision or source.commit}^{{tree}}"], source.path)
        if proc.returncode != 0:
            raise UsageError(f"{source.path}: {source.commit!r} is not a commit there any more")
        return proc.stdout.strip()
    return directory_tree(source.path)


def directory_tree(folder: Path, git_dir: Path | None = None) -> str:
    """The tree id of a plain directory's files, made in a private git directory (a temporary one
    unless `git_dir` is given, where the objects then stay): the folder itself is never written."""
    with tempfile.TemporaryDirectory(prefix="agentloop-tree-") as tmp:
        store = git_dir or Path(tmp) / "git"
        if git_dir is None:
            init = _git(["init", "-q", "--bare", str(store)], Path(tmp))
            if init.returncode != 0:
                raise UsageError(f"{folder}: cannot snapshot it: {init.stderr.strip()}")
        env = {**os.environ, "GIT_DIR": str(store), "GIT_WORK_TREE": str(folder),
               "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        add = _git(["-c", "core.autocrlf=false", "add", "-A", "--", "."], folder, env)
        if add.returncode != 0:
            raise UsageError(f"{folder}: cannot snapshot it: {(add.stderr.strip().splitlines() or ['?'])[-1]}")
        return _git(["write-tree"], folder, env).stdout.strip()
