"""`agentloop apply` from outside: real temporary git repositories, exit codes, JSON, stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentloop.cli import cli

CALC = "def add(a, b):\n    return a + b\n"
GOOD = "calc.py\n<<<<<<< SEARCH\n    return a + b\n=======\n    return b + a\n>>>>>>> REPLACE\n"
BAD = "calc.py\n<<<<<<< SEARCH\n    return a * b\n=======\n    return a / b\n>>>>>>> REPLACE\n"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "calc.py").write_text(CALC)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # any directory inside the repository will do
    return tmp_path


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(cli, ["apply", *args], input=stdin)


def test_applies_from_stdin(repo: Path) -> None:
    res = run(["-"], GOOD)
    assert res.exit_code == 0, res.output
    assert "calc.py" in res.output
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"


def test_refused_changes_nothing(repo: Path) -> None:
    reply = repo / "reply.md"
    reply.write_text(GOOD + BAD)
    res = run([str(reply)])
    assert res.exit_code == 1
    assert "not found" in res.output and "Traceback" not in res.output
    assert (repo / "calc.py").read_text() == CALC


def test_dry_run_and_json(repo: Path) -> None:
    res = run(["--dry-run", "--json", "-"], GOOD)
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["applied"] and data["dry_run"] and data["changed_files"] == ["calc.py"]
    assert (repo / "calc.py").read_text() == CALC


def test_usage_errors(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    res = run([str(repo / "missing.md")])
    assert res.exit_code == 2 and "cannot read" in res.output
    os.chdir(tmp_path_factory.mktemp("not_a_repo"))
    res = run(["-"], GOOD)
    assert res.exit_code == 2 and "not inside a git repository" in res.output
    assert run(["--bogus"]).exit_code == 2


def test_no_edits_is_refusal(repo: Path) -> None:
    res = run(["-"], "I could not find the bug.")
    assert res.exit_code == 1 and "No edits found" in res.output


def test_module_entry_point(repo: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-m", "agentloop", "apply", "-"], input=GOOD, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"


def test_new_files_get_gits_mode(repo: Path) -> None:
    old = os.umask(0o022)
    try:
        reply = "pkg/new.py\n<<<<<<< SEARCH\n=======\nX = 1\n>>>>>>> REPLACE\n"
        reply += "diff --git a/run.sh b/run.sh\nnew file mode 100755\n--- /dev/null\n+++ b/run.sh\n"
        reply += "@@ -0,0 +1 @@\n+echo hi\n"
        res = run(["-"], reply)
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (repo / "pkg/new.py").stat().st_mode & 0o777 == 0o644
    assert (repo / "run.sh").stat().st_mode & 0o777 == 0o755


def test_edit_through_a_symlink_out_is_refused(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("vendor")
    (outside / "calc.py").write_text(CALC)
    (repo / "vendored").symlink_to(outside)
    subprocess.run(["git", "add", "calc.py"], cwd=repo, check=True)
    res = run(["--json", "-"], GOOD.replace("calc.py", "vendored/calc.py", 1))
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["failures"][0]["reason"] == "path_refused" and "symlink" in data["failures"][0]["message"]
    assert (repo / "calc.py").read_text() == CALC and (outside / "calc.py").read_text() == CALC
