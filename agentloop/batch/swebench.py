"""SWE-bench instances -> agentloop task rows, with the test patch as a held-out overlay.

Each instance's `test_patch` is applied to its `base_commit` on a private index whose new objects go
to a temporary object directory (the clone's objects are only read, as alternates), so the clone's
working tree, index and object store are never written. The files the patch adds or changes are
written under a held-out folder next to the task file and laid in only at grading (`accept_files`);
the FAIL_TO_PASS and PASS_TO_PASS test ids become the accept command. The gold `patch` is never copied.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentloop.batch.tasks import ID_MAX, ID_PATTERN, TaskFileError, relative_path_problem
from agentloop.errors import UsageError
from agentloop.files import atomic_write, read_input_text

REPO_PATTERN = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
COMMIT_PATTERN = re.compile(r"[0-9a-fA-F]{7,64}")
PYTEST = "python -m pytest -q -p no:cacheprovider"
MARKER = ".agentloop-import"  # marks a held-out folder this importer wrote (so it may replace it)
META_FIELDS = ("repo", "base_commit", "version", "environment_setup_commit", "created_at")


@dataclass
class Converted:
    """One instance as a task row, and the held-out files (path in the repository -> content, mode)."""

    row: dict[str, Any]
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)


def heldout_dir(out: Path) -> Path:
    """Where the held-out files of task file `out` go: `tasks.jsonl` -> `tasks.d`."""
    return out.with_name(f"{out.stem}.d")


def read_instances(path: Path) -> list[tuple[str, Any]]:
    """(where, instance) pairs from a JSON list or a JSONL file; unparsable lines are reported."""
    label = path.name
    text = read_input_text(path, "file", "expected SWE-bench instances as JSON or JSONL")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError([f"{label}:{exc.lineno}: not JSON: {exc.msg} at column {exc.colno}"]) from None
        return [(f"{label}:row {i}", item) for i, item in enumerate(data, 1)]
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"{label}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"{label}:{number}: not JSON: {exc.msg} at column {exc.colno}")
    if problems:
        raise TaskFileError(problems)
    return rows


def find_clone(repos: Path, repo: str) -> tuple[Path | None, list[Path]]:
    """The local clone of `owner/name` under `repos`, and every place looked at."""
    owner, name = repo.split("/", 1)
    tried = [repos / f"{owner}__{name}", repos / name, repos / owner / name]
    return next((p.resolve() for p in tried if (p / ".git").exists()), None), tried


def convert(raw: Any, where: str, repos: Path, held: Path, checks: tuple[str, ...] = (),
            samples: int = 1) -> tuple[Converted | None, list[str]]:
    """One instance -> a task row whose held-out files will live under `held/<instance_id>/`."""
    if not isinstance(raw, dict):
        return None, [f"{where}: an instance must be an object with instance_id, problem_statement, repo, ..."]
    problems: list[str] = []

    def bad(name: str, why: str) -> None:
        problems.append(f"{where}: {name}: {why}")

    instance_id = raw.get("instance_id")
    if not isinstance(instance_id, str) or not ID_PATTERN.fullmatch(instance_id) or len(instance_id) > ID_MAX:
        bad("instance_id", f"missing or not a usable id (letters, digits, '.', '_', '-'): {instance_id!r}")
    statement = raw.get("problem_statement")
    if not (isinstance(statement, str) and statement.strip()):
        bad("problem_statement", "missing or empty: it is the task the model gets")
    tests = {name: _test_ids(raw.get(name), name, bad, required=name == "FAIL_TO_PASS")
             for name in ("FAIL_TO_PASS", "PASS_TO_PASS")}
    patch = raw.get("test_patch", "")
    if not isinstance(patch, str):
        bad("test_patch", f"must be a unified diff as a string, got {type(patch).__name__}")
    clone = None
    repo, base_commit = raw.get("repo"), raw.get("base_commit")
    if not (isinstance(repo, str) and REPO_PATTERN.fullmatch(repo)):
        bad("repo", f"must be 'owner/name', got {repo!r}")
    else:
        clone, tried = find_clone(repos, repo)
        if clone is None:
            bad("repo", f"no clone of {repo} found; tried {', '.join(str(p) for p in tried)}")
    if not (isinstance(base_commit, str) and COMMIT_PATTERN.fullmatch(base_commit)):
        bad("base_commit", f"must be a commit id (hex), got {base_commit!r}")
    elif clone is not None and not _has_commit(clone, base_commit):
        bad("base_commit", f"{base_commit} is not in {clone}; fetch it (git -C {clone} fetch origin {base_commit})")
    files: dict[str, tuple[bytes, str]] = {}
    if not problems and isinstance(patch, str) and patch.strip():
        files, why = overlay_files(clone, base_commit, patch)
        if why:
            bad("test_patch", why)
    if problems:
        return None, problems
    accept_files = {}
    for path in files:
        problem = relative_path_problem(path)
        if problem:
            return None, [f"{where}: test_patch: file {path!r} {problem}"]
        accept_files[str(held / instance_id / path)] = path
    ids = tests["FAIL_TO_PASS"] + tests["PASS_TO_PASS"]
    row: dict[str, Any] = {"id": instance_id, "task": statement, "source": {"path": str(clone), "commit": base_commit}}
    if checks:
        row["checks"] = list(checks)
    row["accept"] = [" ".join([PYTEST, *(shlex.quote(t) for t in ids)])]
    if accept_files:
        row["accept_files"] = accept_files
    if samples != 1:
        row["samples"] = samples
    row["meta"] = {"source_format": "swebench", "instance_id": instance_id,
                   **{k: raw[k] for k in META_FIELDS if k in raw}, **tests}
    return Converted(row, files), []


def _test_ids(value: Any, name: str, bad, *, required: bool) -> list[str]:
    """A list of test ids, given as a list or as the JSON text of one (the public release's form)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            bad(name, "a string that is not a JSON list of test ids")
            return []
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        bad(name, "must be a list of test ids (or its JSON text)")
        return []
    if required and not value:
        bad(name, "is empty: nothing would show the task solved")
    return value


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None, input_bytes: bytes | None = None):
    return subprocess.run(["git", *args], cwd=cwd, env=env, input=input_bytes, capture_output=True)


def _has_commit(clone: Path, commit: str) -> bool:
    return _git(["cat-file", "-e", f"{commit}^{{commit}}"], clone).returncode == 0


def overlay_files(clone: Path, base_commit: str, patch: str) -> tuple[dict[str, tuple[bytes, str]], str | None]:
    """The files `patch` adds or changes, as they are after applying it to `base_commit` (path ->
    (content, git mode)), or a reason it does not apply. Deleted files are left out: an overlay adds."""
    objects = _git(["rev-parse", "--git-path", "objects"], clone).stdout.decode().strip()
    with tempfile.TemporaryDirectory(prefix="agentloop-swebench-") as tmp:
        (Path(tmp) / "objects").mkdir()
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
               "GIT_OBJECT_DIRECTORY": str(Path(tmp) / "objects"),
               "GIT_ALTERNATE_OBJECT_DIRECTORIES": str((clone / objects).resolve())}
        steps = [(["read-tree", base_commit], None),
                 (["apply", "--cached", "--whitespace=nowarn", "-"], patch.encode())]
        for args, stdin in steps:
            proc = _git(args, clone, env, stdin)
            if proc.returncode != 0:
                message = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return {}, f"does not apply to base_commit {base_commit[:12]}: {message}"
        changed = _git(["diff-index", "--cached", "--no-renames", "--name-status", "-z", base_commit], clone, env)
        fields = changed.stdout.decode(errors="surrogateescape").split("\0")
        files: dict[str, tuple[bytes, str]] = {}
        for status, path in zip(fields[0::2], fields[1::2], strict=False):
            if status == "D":
                continue
            entry = _git(["ls-files", "-s", "-z", "--", path], clone, env).stdout.decode().split()
            mode, blob = entry[0], entry[1]
            files[path] = (_git(["cat-file", "blob", blob], clone, env).stdout, mode)
        return files, None


def import_swebench(instances_file: Path, repos: Path, out: Path, *, checks: tuple[str, ...] = (),
                    samples: int = 1) -> int:
    """Convert every instance, then write the held-out folder and the task file; nothing is written
    when any instance is bad (TaskFileError with one line each). Returns the number of tasks."""
    if not repos.is_dir():
        raise UsageError(f"--repos {repos}: not a directory; give the folder holding your clones")
    held = heldout_dir(out).resolve()
    converted: list[Converted] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, raw in read_instances(instances_file):
        item, item_problems = convert(raw, where, repos, held, checks, samples)
        problems += item_problems
        if item is not None:
            if item.row["id"] in seen:
                problems.append(f"{where}: instance_id: {item.row['id']!r} is already the id of {seen[item.row['id']]}")
            else:
                seen[item.row["id"]] = where
                converted.append(item)
    if not converted and not problems:
        problems.append(f"{instances_file.name}: no instances in it")
    if problems:
        raise TaskFileError(problems)
    _write(out, held, converted)
    return len(converted)


def _write(out: Path, held: Path, converted: list[Converted]) -> None:
    """Held-out folder first (staged beside it, then renamed in), then the task file (atomically)."""
    if held.exists() and not (held / MARKER).exists():
        raise UsageError(f"{held} exists and was not written by `agentloop import`; move it or choose another -o")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: its folder does not exist")
    staging = held.with_name(f".{held.name}.tmp-{os.getpid()}")
    old = held.with_name(f".{held.name}.old-{os.getpid()}")
    try:
        staging.mkdir()
        (staging / MARKER).write_text("written by `agentloop import`; replaced whole by the next import\n")
        for item in converted:
            for path, (content, mode) in item.files.items():
                target = staging / item.row["id"] / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                if mode == "100755":
                    target.chmod(0o755)
        if held.exists():
            held.rename(old)
        staging.rename(held)
        text = "".join(json.dumps(item.row, ensure_ascii=False) + "\n" for item in converted)
        atomic_write(out, text)
    except OSError as exc:
        raise UsageError(f"-o {out}: cannot write it ({exc.strerror})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
