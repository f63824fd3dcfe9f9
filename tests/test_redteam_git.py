"""Red team for the result and agentloop's own git: what checks write is never the result, planted git
config never runs through agentloop, `.gitignore`/`.gitattributes` cannot hide the model's change, and
nothing of the user's is lost. Real repositories, real subprocesses, the model scripted over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, PYTEST, git, make_repo
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.workspace import sandbox
from agentloop.workspace.repo import Workspace, git_env

NO_BWRAP = sandbox.probe()
SANDBOXES = [pytest.param("bwrap", marks=pytest.mark.skipif(NO_BWRAP is not None, reason=f"no bubblewrap: {NO_BWRAP}")),
             "off"]
# Checks that write in the workspace under the sandbox need its writable bind (branch i11a).
WRITING_SANDBOXES = [pytest.param("bwrap", marks=SANDBOXES[0].marks), "off"]
FIX_ADD = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"


def run_fix(repo: Path, script: list[dict], *args: str, monkeypatch) -> tuple[int, dict, str, FakeLLM]:
    monkeypatch.chdir(repo)
    with FakeLLM(script) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json",
                                          *args], catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr, server


def tree_state(repo: Path) -> dict[str, bytes]:
    """Every file of the user's tree (ignored ones too), except git's and agentloop's own."""
    out = {}
    for path in repo.rglob("*"):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".agentloop/")):
            out[rel] = path.read_bytes()
    return out


def changed_paths(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def patch_paths(summary: dict) -> set[str]:
    text = Path(summary["patch"]).read_text()
    return {line.split(" b/", 1)[1] for line in text.splitlines() if line.startswith("diff --git ")}


def branch_paths(repo: Path, summary: dict) -> set[str]:
    branch = summary["workspace"]["branch"]
    start = git(repo, "rev-list", "--reverse", branch).split()
    # The branch: the starting state (parent HEAD), then one commit per turn, then the result.
    first_own = next(c for c in start if "starting state" in git(repo, "log", "-1", "--format=%s", c))
    return set(git(repo, "diff", "--name-only", "--no-renames", first_own, branch).split())


# -- check outputs are never the result -----------------------------------------------------------------
WRITING_CHECK = ("mkdir -p build && echo built > build/out.o && echo stamp > build.stamp && "
                 "echo rewritten-by-check > data.txt && rm -f NOTES.txt && printf 'checks: [\"true\"]\\n' "
                 f"> .agentloop.yaml && {sys.executable} -m pytest -q")


@pytest.mark.parametrize("mode", WRITING_SANDBOXES)
def test_check_outputs_never_enter_the_result(tmp_path, monkeypatch, mode):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, "data.txt": "data\n"})
    (repo / "NOTES.txt").write_text("my untracked notes\n")
    before = tree_state(repo)
    # --allow-test-edits: .agentloop.yaml is not protected, so the check's copy would reach the result
    # if anything but the model's edits did (with protection on, that round could not accept the run).
    code, summary, err, _ = run_fix(repo, [{"content": FIX_ADD}], "--check", WRITING_CHECK, "--sandbox", mode,
                                    "--allow-test-edits", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", err
    after = tree_state(repo)
    assert changed_paths(before, after) == {"calc.py"}  # NOTES.txt kept, no .agentloop.yaml, no build output
    assert after["NOTES.txt"] == b"my untracked notes\n" and not (repo / ".agentloop.yaml").exists()
    assert patch_paths(summary) == {"calc.py"}
    assert branch_paths(repo, summary) == {"calc.py"}
    for event in read_events(Path(summary["trajectory"])):
        if event["type"] == "outcome":
            assert "build.stamp" not in event["diff"] and "data.txt" not in event["diff"]
    # undo takes back exactly the model's change
    result = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert result.exit_code == 0, result.stderr
    assert tree_state(repo) == before


def test_check_outputs_in_place_stay_but_are_not_the_result(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, "data.txt": "data\n"})
    check = f"echo stamp > build.stamp && echo rewritten > data.txt && {sys.executable} -m pytest -q"
    code, summary, err, _ = run_fix(repo, [{"content": FIX_ADD}], "--check", check, "--in-place", "--sandbox", "off",
                                    monkeypatch=monkeypatch)
    assert code == 0, err
    assert (repo / "build.stamp").exists() and (repo / "data.txt").read_text() == "rewritten\n"  # as after a test run
    assert patch_paths(summary) == {"calc.py"} and branch_paths(repo, summary) == {"calc.py"}
    result = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert result.exit_code == 0 and "calc.py" in result.stderr and "data.txt" not in result.stderr
    assert (repo / "calc.py").read_text() == BUGGY_CALC
    assert (repo / "data.txt").read_text() == "rewritten\n"  # not the run's change: undo leaves it


@pytest.mark.parametrize("mode", WRITING_SANDBOXES)
def test_passing_run_whose_check_writes_a_file_changes_nothing(tmp_path, monkeypatch, mode):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC.replace("a - b", "a + b"), "test_calc.py": CALC_TEST})
    before = tree_state(repo)
    code, summary, err, server = run_fix(repo, [{"content": "unused"}], "--check",
                                         f"echo x > made-by-check.txt && {PYTEST}", "--sandbox", mode,
                                         monkeypatch=monkeypatch)
    assert code == 0 and summary["changed"] is False and server.requests == []
    assert tree_state(repo) == before and summary["workspace"]["branch"] is None


def test_check_rewriting_a_file_the_model_edited_does_not_change_the_result(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    check = f"{sys.executable} -m pytest -q && echo '# appended by the check' >> calc.py"
    code, summary, err, _ = run_fix(repo, [{"content": FIX_ADD}], "--check", check, "--sandbox", "off",
                                    monkeypatch=monkeypatch)
    assert code == 0, err
    assert (repo / "calc.py").read_text() == BUGGY_CALC.replace("a - b", "a + b")
    assert "appended by the check" not in Path(summary["patch"]).read_text()


# -- planted git configuration ----------------------------------------------------------------------------
def plant_fsmonitor(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "fsmonitor-ran"
    script = tmp_path / "fsmon.sh"
    script.write_text(f"#!/bin/sh\nenv >> {marker}\necho ran >> {marker}\nprintf '\\0'\n")
    script.chmod(0o755)
    return script, marker


def test_planted_fsmonitor_never_runs_through_agentloops_git(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    script, marker = plant_fsmonitor(tmp_path)
    with open(repo / ".git" / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {script}\n[diff]\n\texternal = {script}\n")
    subprocess.run(["git", "status"], cwd=repo, capture_output=True)
    assert marker.exists(), "the planted hook must run for a plain git, or this test proves nothing"
    marker.unlink()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-test-0123456789")
    ws = Workspace(repo)
    start = ws.snapshot()
    (repo / "calc.py").write_text("changed\n")
    end = ws.tree_with(start, ["calc.py"])
    assert "changed" in ws.diff(start, end) and ws.changes(start, end)
    ws.restore(start, {"calc.py"})
    assert not marker.exists()
    assert "OPENAI_API_KEY" not in git_env() and "GIT_CONFIG_NOSYSTEM" in git_env()


@pytest.mark.parametrize("mode", SANDBOXES)
def test_check_planting_fsmonitor_is_undone_and_voids_the_round(tmp_path, monkeypatch, mode):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    script, marker = plant_fsmonitor(tmp_path)
    config_before = (repo / ".git" / "config").read_bytes()
    plant = (f"printf '[core]\\n\\tfsmonitor = {script}\\n' >> \"$(git rev-parse --git-common-dir)/config\" "
             "2>/dev/null; ")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-test-0123456789")
    code, summary, err, _ = run_fix(repo, [{"content": FIX_ADD}], "--check", plant + PYTEST, "--sandbox", mode,
                                    "--max-turns", "2", monkeypatch=monkeypatch)
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert not marker.exists()
    events = read_events(Path(summary["trajectory"]))
    guards = [e for e in events if e["type"] == "guard" and e["kind"] == "git_config_changed"]
    if mode == "off":  # the check could write .git/config: every round it did is voided
        assert guards and summary["outcome"] != "accepted" and code != 0
        assert (repo / "calc.py").read_text() == BUGGY_CALC
    else:  # under the sandbox .git is read-only: nothing to undo, the fix is accepted
        assert not guards and code == 0


# -- .gitattributes and .gitignore cannot hide the model's change ------------------------------------------
def test_gitattributes_minus_diff_does_not_make_the_diff_binary(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST,
                                         ".gitattributes": "*.py -diff\n"})
    code, summary, err, _ = run_fix(repo, [{"content": FIX_ADD}], "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0, err
    patch = Path(summary["patch"]).read_text()
    assert "+    return a + b" in patch and "Binary files" not in patch and "GIT binary patch" not in patch
    diff = next(e for e in read_events(Path(summary["trajectory"])) if e["type"] == "outcome")["diff"]
    assert "+    return a + b" in diff


def test_gitignored_file_the_model_creates_is_in_the_result(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST,
                                         ".gitignore": "calc_helpers.py\n"})
    reply = ("calc_helpers.py\n<<<<<<< SEARCH\n=======\ndef plus(a, b):\n    return a + b\n>>>>>>> REPLACE\n\n"
             "calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\nfrom calc_helpers import plus\n\n\n"
             "def add(a, b):\n    return plus(a, b)\n>>>>>>> REPLACE\n")
    code, summary, err, _ = run_fix(repo, [{"content": reply}], "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0, err
    assert patch_paths(summary) == {"calc.py", "calc_helpers.py"}
    assert branch_paths(repo, summary) == {"calc.py", "calc_helpers.py"}
    assert (repo / "calc_helpers.py").read_text() == "def plus(a, b):\n    return a + b\n"


# -- nothing lost ----------------------------------------------------------------------------------------------
ENV_TEXT = b"SECRET_TOKEN=keep-me\r\nOTHER=1\n"
ENV_EDIT = ".env\n<<<<<<< SEARCH\nOTHER=1\n=======\nOTHER=2\n>>>>>>> REPLACE\n"


@pytest.mark.parametrize("force", [False, True])
def test_in_place_edit_of_ignored_env_is_undone_byte_for_byte(tmp_path, monkeypatch, force):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, ".gitignore": ".env\n"})
    (repo / ".env").write_bytes(ENV_TEXT)
    (repo / ".env").chmod(0o600)
    code, summary, err, _ = run_fix(repo, [{"content": ENV_EDIT + "\n" + FIX_ADD}], "--check", PYTEST, "--in-place",
                                    "--file", ".env", monkeypatch=monkeypatch)
    assert code == 0, err
    assert b"OTHER=2" in (repo / ".env").read_bytes()
    assert ".env" in patch_paths(summary)
    result = CliRunner().invoke(cli, ["undo", summary["run_id"], *(["--force"] if force else [])])
    assert result.exit_code == 0, result.stderr
    assert (repo / ".env").read_bytes() == ENV_TEXT
    assert (repo / "calc.py").read_text() == BUGGY_CALC


def test_write_back_never_overwrites_a_users_ignored_file(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, ".gitignore": ".env\n"})
    (repo / ".env").write_bytes(ENV_TEXT)
    create_env = ".env\n<<<<<<< SEARCH\n=======\nOTHER=from-the-model\n>>>>>>> REPLACE\n\n" + FIX_ADD
    code, summary, err, _ = run_fix(repo, [{"content": create_env}], "--check", PYTEST, monkeypatch=monkeypatch)
    assert (repo / ".env").read_bytes() == ENV_TEXT  # the worktree never had the user's .env: a conflict
    assert code == 1 and summary["workspace"]["conflicts"] == [".env"]
    assert (repo / "calc.py").read_text() == BUGGY_CALC  # all or nothing
    assert summary["workspace"]["branch"] in err and "final.patch" in err


# -- before any model call --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["pytset -q", "./run-tests.sh"])
def test_check_that_cannot_start_is_a_usage_error_before_the_model(tmp_path, monkeypatch, command):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "run-tests.sh": "#!/bin/sh\nexit 1\n"})
    code, summary, err, server = run_fix(repo, [{"content": FIX_ADD}], "--check", command, monkeypatch=monkeypatch)
    assert code == 2 and server.requests == []
    assert f"`{command}` cannot start" in err


def test_fix_without_model_says_so_before_running_the_suite(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "--check", f"touch ran && {PYTEST}"])
    assert result.exit_code == 2 and "no model is configured" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (repo / "ran").exists()


def test_without_bubblewrap_fix_says_checks_run_unsandboxed(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC.replace("a - b", "a + b"), "test_calc.py": CALC_TEST})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    env["PATH"] = str(bin_dir)
    proc = subprocess.run([sys.executable, "-m", "agentloop", "fix", "-m", "openai/fake", "--check", PYTEST],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "unsandboxed" in line]
    assert len(lines) == 1 and "bwrap is not installed" in lines[0]


def test_in_place_keeping_an_earlier_turn_puts_an_ignored_file_back(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC + "# keep\n", "test_calc.py": CALC_TEST,
                                         ".gitignore": ".env\n"})
    (repo / ".env").write_bytes(ENV_TEXT)
    worse = ENV_EDIT + "\ncalc.py\n<<<<<<< SEARCH\n# keep\n=======\n# gone\n>>>>>>> REPLACE\n"
    code, summary, err, _ = run_fix(repo, [{"content": worse}], "--check", PYTEST, "--check", "grep -q keep calc.py",
                                    "--in-place", "--max-turns", "1", "--file", ".env", monkeypatch=monkeypatch)
    assert code == 1 and summary["kept_turn"] == 0, err
    assert (repo / ".env").read_bytes() == ENV_TEXT and (repo / "calc.py").read_text() == BUGGY_CALC + "# keep\n"
    assert summary["changed"] is False


def test_diff_keeps_real_binaries_binary_and_applies(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", ".gitattributes": "*.py -diff\n"})
    (repo / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-qm", "bin")
    ws = Workspace(repo)
    start = ws.snapshot()
    (repo / "a.py").write_text("x = 2\n")
    (repo / "blob.bin").write_bytes(b"\x00\x03binary, changed")
    patch = ws.diff(start, ws.tree_with(start, ["a.py", "blob.bin"]))
    assert "-x = 1\n+x = 2\n" in patch and "GIT binary patch" in patch
    git(repo, "checkout", "--", ".")
    subprocess.run(["git", "apply", "--binary", "-"], cwd=repo, input=patch.encode(), check=True)
    assert (repo / "a.py").read_text() == "x = 2\n"
    assert (repo / "blob.bin").read_bytes() == b"\x00\x03binary, changed"


def test_snapshot_sees_a_same_size_change_made_in_the_second_of_the_commit(tmp_path):
    """Racily clean entries: the copied index keeps its mtime, so git still compares their content."""
    import time

    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC})
    (repo / "calc.py").write_text(BUGGY_CALC.replace("a - b", "a + b"))  # same size, same second
    time.sleep(1.05)
    tree = Workspace(repo).snapshot()
    assert "a + b" in git(repo, "cat-file", "-p", f"{tree}:calc.py")
