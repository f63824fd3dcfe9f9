"""Checks behave as in the user's checkout: they write in the run's workspace, see its ignored environment
(.venv, node_modules, target/), and never see the user's tree, run records or ignored secrets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, FIX_ADD, git, make_repo, validate_event
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.workspace import environment as workspace_env
from agentloop.workspace import sandbox

REASON = sandbox.probe()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"bubblewrap cannot run here: {REASON}")


def run_fix(repo: Path, server: FakeLLM | None, *args: str, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.chdir(repo)
    api = ["--api-base", server.api_base] if server else []
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", *api, "--json", *args], catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr


def check_outputs(summary: dict) -> list[str]:
    return [e["output"] for e in read_events(Path(summary["trajectory"])) if e["type"] == "check"]


PROBE = """#!/bin/sh
# Model-written code run as a check: what can it write?
touch build.stamp || { echo "CANNOT WRITE build.stamp"; exit 1; }
mkdir -p build/obj && echo o > build/obj/a.o || { echo "CANNOT WRITE build/"; exit 1; }
common="$(git rev-parse --git-common-dir)"
for t in .git "$common/config" "$common/HEAD" "$REAL/.agentloop/runs/planted" "$REAL/.git/agentloop/planted" \\
         "$REAL/planted.txt" "/var/tmp/agentloop-probe-$$"; do
  (echo pwned >> "$t") 2>/dev/null && echo "wrote $t"
done
ls "$REAL/.agentloop/runs" 2>/dev/null | grep -q . && { echo "SAW RUNS"; exit 1; }
cat "$REAL/secret.txt" 2>/dev/null | grep -q USER_TREE && { echo "SAW USER TREE"; exit 1; }
exit 0
"""


@needs_bwrap
def test_checks_write_in_the_workspace_and_nowhere_that_matters(tmp_path: Path, monkeypatch):
    real = tmp_path / "repo"
    repo = make_repo(real, {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, "probe.sh": PROBE,
                            ".gitignore": "secret.txt\n"})
    (repo / "secret.txt").write_text("USER_TREE private notes\n")
    config_before = (repo / ".git" / "config").read_text()
    head_before = (repo / ".git" / "HEAD").read_text()
    monkeypatch.setenv("REAL", str(real))
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")  # bytecode and pytest's cache are written, as at home
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(repo, server, "--check", "REAL=$REAL sh probe.sh && python -m pytest -q",
                                     "--sandbox", "bwrap", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", err
    assert "may write anywhere in the run's workspace" in err  # the start-up line says what is true
    outputs = check_outputs(summary)
    assert len(outputs) == 2
    for output in outputs:
        assert "Read-only file system" not in output and "PytestCacheWarning" not in output, output
        assert "CANNOT" not in output and "SAW" not in output, output
    assert (repo / ".git" / "config").read_text() == config_before
    assert (repo / ".git" / "HEAD").read_text() == head_before
    assert not (repo / "planted.txt").exists() and not (repo / ".agentloop/runs/planted").exists()
    assert not (repo / ".git/agentloop/planted").exists()
    assert not list(Path("/var/tmp").glob("agentloop-probe-*"))


def env_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST,
                                         ".gitignore": "node_modules/\ntarget/\n.venv/\n"})
    lib = repo / "node_modules" / "mylib"
    lib.mkdir(parents=True)
    (lib / "index.js").write_text("module.exports = 42;\n")
    (repo / "target").mkdir()
    (repo / "target" / "seed.txt").write_text("seed\n")
    return repo


NODE_CHECK = "node -e \"process.exit(require('mylib') === 42 ? 0 : 1)\""


@pytest.mark.parametrize("mode", ["bwrap", "off"])
def test_ignored_environment_is_there_for_checks(tmp_path: Path, monkeypatch, mode):
    if mode == "bwrap" and REASON:
        pytest.skip(f"bubblewrap cannot run here: {REASON}")
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    repo = env_repo(tmp_path)
    check = (f"{NODE_CHECK} && cat target/seed.txt && echo built >> target/count && "
             "(echo evil > node_modules/mylib/evil.js) 2>/dev/null; python -m pytest -q -p no:cacheprovider")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(repo, server, "--check", check, "--sandbox", mode, monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", (err, check_outputs(summary))
    assert all("seed" in out for out in check_outputs(summary)), check_outputs(summary)
    events = read_events(Path(summary["trajectory"]))
    assert [e["dirs"] for e in events if e["type"] == "environment"] == [
        [{"name": "node_modules", "build": False}, {"name": "target", "build": True}]]
    assert not [problem for e in events for problem in validate_event(e)]
    if mode == "bwrap":  # the user's dependencies are read-only inside
        assert not (repo / "node_modules/mylib/evil.js").exists()
    # The build directory is the repository's own copy, kept across runs; the user's is never written.
    assert sorted(p.name for p in (repo / "target").iterdir()) == ["seed.txt"]
    copy = repo / ".git" / "agentloop" / "env" / "target"
    assert (copy / "count").read_text() == "built\nbuilt\n"  # turn 0, turn 1
    # Nothing of the environment in the result, the branch or the user's tree.
    assert "node_modules" not in Path(summary["patch"]).read_text()
    names = git(repo, "ls-tree", "-r", "--name-only", summary["workspace"]["branch"]).split()
    assert not any(n.startswith(("node_modules", "target")) for n in names), names
    assert not (repo / "node_modules").is_symlink() and (repo / "node_modules/mylib/index.js").is_file()
    # A second run: the build copy is still there (incremental builds stay incremental).
    (repo / "test_calc.py").write_text(CALC_TEST)  # unchanged; the checks now pass at once
    code, summary, err = run_fix(repo, None, "--check", check, "--sandbox", mode, monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", err
    assert (copy / "count").read_text() == "built\nbuilt\nbuilt\n"


def test_detect_rule(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"build/keep.txt": "tracked\n", "a.py": "x = 1\n",
                                         ".gitignore": "node_modules/\nmyenv/\ntarget/\nout/\n"})
    for name in ("node_modules", "target", "vendor", "out"):  # vendor: not ignored, so not shared
        (repo / name).mkdir()
        (repo / name / "f").write_text("x\n")
    (repo / "myenv").mkdir()
    (repo / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (repo / "build" / "extra.o").write_text("o\n")  # build/ holds tracked files: it is the worktree's own
    found = {d.name: d.build for d in workspace_env.detect(repo, {})}
    assert found == {"node_modules": False, "target": True, "myenv": False}
    found = {d.name: d.build for d in workspace_env.detect(repo, {"build": ("out",)})}
    assert found["out"] is True
    assert workspace_env.detect(repo, {"detect": False}) == []
    assert [d.name for d in workspace_env.detect(repo, {"detect": False, "shared": ("node_modules",)})] == [
        "node_modules"]


def test_workspace_config_key(tmp_path: Path):
    from agentloop.config import load_config
    from agentloop.errors import ConfigError

    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / ".agentloop.yaml").write_text("workspace: {detect: false, shared: [deps], build: [out/], hide: []}\n")
    assert load_config(repo).workspace == {"detect": False, "shared": ("deps",), "build": ("out",), "hide": ()}
    for bad in ("workspace: {shared: [a/b]}", "workspace: {nope: 1}", "workspace: {detect: maybe}", "workspace: 3"):
        (repo / ".agentloop.yaml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match="workspace"):
            load_config(repo)


@needs_bwrap
@pytest.mark.parametrize("hide", [None, "[]"])
def test_in_place_hides_ignored_dotenv_unless_told(tmp_path: Path, monkeypatch, hide):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", ".gitignore": ".env\n.env.*\n"})
    (repo / ".env").write_text("DB_URL=dotenv-value-5521\n")
    (repo / ".env.local").write_text("OTHER=dotenv-value-5522\n")
    if hide:
        (repo / ".agentloop.yaml").write_text(f"workspace: {{hide: {hide}}}\n")
    code, summary, err = run_fix(repo, None, "--check", "cat .env .env.local; true", "--in-place",
                                 "--sandbox", "bwrap", monkeypatch=monkeypatch)
    assert code == 0, err
    output = check_outputs(summary)[0]
    if hide is None:
        assert "dotenv-value" not in output
    else:
        assert "dotenv-value-5521" in output and "dotenv-value-5522" in output
    assert (repo / ".env").read_text() == "DB_URL=dotenv-value-5521\n"
