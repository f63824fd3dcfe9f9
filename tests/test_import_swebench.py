"""`agentloop import swebench`: instances -> a task file that loads, with the test patch held out (and
right: the accept command passes on the fixed code and fails on the base), the clone never written,
bad instances one line each and nothing written."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, git, make_repo

from agentloop.batch.tasks import load_tasks
from agentloop.cli import cli

OLD_TEST = "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
NEW_TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


@pytest.fixture
def clone(tmp_path):
    """A clone at DIR/acme__calc whose base commit has a bug, and a test patch that shows it."""
    repos = tmp_path / "repos"
    repo = make_repo(repos / "acme__calc", {"calc.py": BUGGY_CALC, "tests/test_mul.py": OLD_TEST})
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "tests" / "test_add.py").write_text(NEW_TEST)
    (repo / "tests" / "test_mul.py").write_text(OLD_TEST + "\n\ndef test_mul_zero():\n    assert mul(0, 3) == 0\n")
    git(repo, "add", "-A")
    test_patch = git(repo, "diff", "--cached", base)
    git(repo, "reset", "-q", "--hard", base)
    git(repo, "commit", "-q", "--allow-empty", "-m", "later work, so HEAD is not the base")
    return repos, repo, base, test_patch


def instance(base: str, test_patch: str, **changes) -> dict:
    return {"instance_id": "acme__calc-1", "repo": "acme/calc", "base_commit": base,
            "problem_statement": "add() returns the difference, not the sum.", "test_patch": test_patch,
            "patch": "THE GOLD PATCH", "version": "1.0", "hints_text": "",
            "FAIL_TO_PASS": json.dumps(["tests/test_add.py::test_add"]),
            "PASS_TO_PASS": ["tests/test_mul.py::test_mul", "tests/test_mul.py::test_mul_zero"]} | changes


def run_import(tmp_path: Path, monkeypatch, rows, *args: str, json_list: bool = False):
    path = tmp_path / ("instances.json" if json_list else "instances.jsonl")
    path.write_text(json.dumps(rows) if json_list else "".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(cli, ["import", "swebench", str(path), *args], catch_exceptions=False)


def repo_state(repo: Path) -> tuple[str, ...]:
    return (git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"),
            (repo / ".git" / "index").read_bytes().hex(), git(repo, "count-objects", "-v"))


def test_an_instance_becomes_a_task_with_its_tests_held_out(clone, tmp_path, monkeypatch):
    repos, repo, base, test_patch = clone
    before = repo_state(repo)
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(repos),
                        "-o", "out/tasks.jsonl", "--check", "python -m pytest -q tests/test_mul.py", "--samples", "4")
    assert result.exit_code == 2 and "its folder does not exist" in result.stderr  # -o's folder must exist
    (tmp_path / "out").mkdir()
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(repos),
                        "-o", "out/tasks.jsonl", "--check", "python -m pytest -q tests/test_mul.py", "--samples", "4")
    assert result.exit_code == 0, result.stderr
    assert "wrote 1 tasks to out/tasks.jsonl (held-out test files in out/tasks.d)" in result.stderr
    assert repo_state(repo) == before  # the clone's tree, index, HEAD and object store are untouched

    [row] = load_tasks(tmp_path / "out" / "tasks.jsonl")  # the written file passes the task-file validator
    held = (tmp_path / "out" / "tasks.d" / "acme__calc-1").resolve()
    assert row.id == "acme__calc-1" and row.task == "add() returns the difference, not the sum."
    assert row.source.path == repo.resolve() and row.source.commit == base and row.samples == 4
    assert row.checks == ("python -m pytest -q tests/test_mul.py",)
    assert row.accept == ("python -m pytest -q -p no:cacheprovider tests/test_add.py::test_add "
                          "tests/test_mul.py::test_mul tests/test_mul.py::test_mul_zero",)
    assert dict(row.accept_files) == {held / "tests/test_add.py": "tests/test_add.py",
                                      held / "tests/test_mul.py": "tests/test_mul.py"}
    assert (held / "tests/test_add.py").read_text() == NEW_TEST
    assert "test_mul_zero" in (held / "tests/test_mul.py").read_text()
    assert row.meta["FAIL_TO_PASS"] == ["tests/test_add.py::test_add"] and row.meta["version"] == "1.0"
    assert "GOLD" not in (tmp_path / "out" / "tasks.jsonl").read_text()  # the solution is never copied

    # The held-out overlay and the accept command grade for real: fail at the base, pass once fixed.
    def grade(fixed: bool) -> int:
        work = tmp_path / f"grade-{fixed}"
        archive = subprocess.run(["git", "archive", base], cwd=repo, capture_output=True, check=True).stdout
        tarfile.open(fileobj=BytesIO(archive)).extractall(work, filter="data")
        for src, dest in row.accept_files:
            (work / dest).write_bytes(src.read_bytes())
        if fixed:
            (work / "calc.py").write_text(BUGGY_CALC.replace("a - b", "a + b"))
        argv = shlex.split(row.accept[0])
        return subprocess.run([sys.executable, *argv[1:]], cwd=work, capture_output=True).returncode

    assert grade(fixed=False) == 1 and grade(fixed=True) == 0


def test_clone_layouts_and_json_lists(clone, tmp_path, monkeypatch):
    repos, repo, base, test_patch = clone
    (repos / "acme").mkdir()
    repo.rename(repos / "acme" / "calc")
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(repos), json_list=True)
    assert result.exit_code == 0, result.stderr
    [row] = load_tasks(tmp_path / "instances.tasks.jsonl")
    assert row.source.path == (repos / "acme" / "calc").resolve()
    (repos / "acme" / "calc").rename(repos / "calc")
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(repos), json_list=True)
    assert result.exit_code == 0, result.stderr  # and the earlier held-out folder is replaced, not refused
    assert load_tasks(tmp_path / "instances.tasks.jsonl")[0].source.path == (repos / "calc").resolve()


def test_bad_instances_one_line_each_and_nothing_written(clone, tmp_path, monkeypatch):
    repos, repo, base, test_patch = clone
    rows = [
        instance(base, test_patch),
        instance(base, test_patch, instance_id="b", repo="nobody/nothing"),
        instance(base, test_patch, instance_id="c", FAIL_TO_PASS="[not json"),
        instance(base, test_patch, instance_id="d", base_commit="0" * 40),
        instance(base, test_patch.replace("return", "retrun").replace("assert mul(2, 3)", "assert mul(9, 9)"),
                 instance_id="e"),
        instance(base, test_patch, instance_id="f", FAIL_TO_PASS="[]", problem_statement=""),
        "[1, 2]",
        instance(base, test_patch),
    ]
    result = run_import(tmp_path, monkeypatch, rows, "--repos", str(repos), "-o", "t.jsonl")
    assert result.exit_code == 2
    lines = result.stderr.removeprefix("agentloop: ").strip().splitlines()
    tried = ", ".join(str(repos / p) for p in ("nobody__nothing", "nothing", "nobody/nothing"))
    assert lines[:4] == [
        f"instances.jsonl:2: repo: no clone of nobody/nothing found; tried {tried}",
        "instances.jsonl:3: FAIL_TO_PASS: a string that is not a JSON list of test ids",
        f"instances.jsonl:4: base_commit: {'0' * 40} is not in {repo}; fetch it "
        f"(git -C {repo} fetch origin {'0' * 40})",
        f"instances.jsonl:5: test_patch: does not apply to base_commit {base[:12]}: "
        + lines[3].split(f"{base[:12]}: ", 1)[1],
    ]
    assert lines[4:] == [
        "instances.jsonl:6: problem_statement: missing or empty: it is the task the model gets",
        "instances.jsonl:6: FAIL_TO_PASS: is empty: nothing would show the task solved",
        "instances.jsonl:7: an instance must be an object with instance_id, problem_statement, repo, ...",
        "instances.jsonl:8: instance_id: 'acme__calc-1' is already the id of instances.jsonl:1",
    ]
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "t.d").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances.jsonl", "repos"]


def test_a_folder_it_did_not_write_is_never_replaced(clone, tmp_path, monkeypatch):
    repos, _, base, test_patch = clone
    (tmp_path / "t.d").mkdir()
    (tmp_path / "t.d" / "mine.txt").write_text("the user's\n")
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(repos), "-o", "t.jsonl")
    assert result.exit_code == 2 and "was not written by `agentloop import`" in result.stderr
    assert (tmp_path / "t.d" / "mine.txt").read_text() == "the user's\n" and not (tmp_path / "t.jsonl").exists()
    result = run_import(tmp_path, monkeypatch, [instance(base, test_patch)], "--repos", str(tmp_path / "none"))
    assert result.exit_code == 2 and "not a directory" in result.stderr
