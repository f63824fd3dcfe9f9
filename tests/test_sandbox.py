"""The bubblewrap sandbox, for real: no network, read-only system and .git, the workspace writable."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_repo

from agentloop.cli import cli
from agentloop.workspace import sandbox
from agentloop.workspace.checks import run_command

REASON = sandbox.probe()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"bubblewrap cannot run here: {REASON}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"a.txt": "a\n", "tests/test_x.py": "def test_x():\n    pass\n"})


def boxed(repo: Path, command: str, protected: tuple[Path, ...] = ()):
    box = sandbox.resolve("bwrap", repo, [repo / ".git"])
    assert box.mode == "bwrap"
    return run_command(command, repo, timeout=30, wrapper=box.wrapper(protected))


@needs_bwrap
def test_workspace_writable_rest_read_only(repo: Path, tmp_path: Path):
    beside = tmp_path / "beside.txt"  # under /tmp: lands in the sandbox's own throwaway /tmp
    result = boxed(repo, f"echo hi > inside.txt && echo x > {beside} && echo beside-ok")
    assert (repo / "inside.txt").read_text() == "hi\n"
    assert "beside-ok" in result.output and not beside.exists()
    target = Path(f"/var/tmp/agentloop-sandbox-test-{tmp_path.name}")
    assert boxed(repo, f"echo x > {target}").exit_code != 0
    assert not target.exists()


@needs_bwrap
def test_git_dir_is_read_only(repo: Path):
    hook = repo / ".git" / "hooks" / "pre-commit"
    result = boxed(repo, "echo 'rm -rf ~' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit")
    assert result.exit_code != 0 and not hook.exists()
    assert boxed(repo, "git config user.name Mallory").exit_code != 0
    assert "Mallory" not in (repo / ".git" / "config").read_text()
    assert boxed(repo, "git status --porcelain").passed  # reading git still works


@needs_bwrap
def test_git_worktree_git_dirs_are_read_only(repo: Path, tmp_path: Path):
    wt = tmp_path / "wt"
    subprocess.run(["git", "worktree", "add", "-q", "-b", "side", str(wt)], cwd=repo, check=True)
    common = repo / ".git"
    own = common / "worktrees" / "wt"
    box = sandbox.resolve("bwrap", wt, [own, common])
    result = run_command("echo evil > \"$(git rev-parse --git-dir)/HEAD\"; echo x > ok.txt", wt, timeout=30,
                         wrapper=box.wrapper())
    assert "ref: refs/heads/side" in (own / "HEAD").read_text(), result.output
    assert (wt / "ok.txt").exists()


def _accept(server: socket.socket, into: list) -> None:
    """Record a connection, if any arrives before the listener is closed."""
    try:
        into.append(server.accept())
    except OSError:
        pass


@needs_bwrap
def test_network_is_blocked(repo: Path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[bool] = []
    threading.Thread(target=_accept, args=(server, accepted), daemon=True).start()
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)\""
    try:
        assert run_command(probe, repo, timeout=30).passed  # the listener is reachable outside
        assert not boxed(repo, probe).passed
    finally:
        server.close()


@needs_bwrap
def test_protected_paths_are_read_only_inside(repo: Path):
    result = boxed(repo, "echo 'def test_x(): pass' > tests/test_x.py; echo y > tests/new_test.py; echo z > a.txt",
                   protected=(repo / "tests",))
    assert "Read-only file system" in result.output
    assert (repo / "tests/test_x.py").read_text() == "def test_x():\n    pass\n"
    assert not (repo / "tests/new_test.py").exists() and (repo / "a.txt").read_text() == "z\n"


@needs_bwrap
def test_processes_outside_the_sandbox_are_invisible(repo: Path):
    result = boxed(repo, "ls /proc | grep -c '^[0-9]'")
    assert int(result.output.strip()) < 10  # only the sandbox's own processes


def test_auto_falls_back_with_one_line_when_bwrap_is_missing(repo: Path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox.probe.cache_clear()
    try:
        box = sandbox.resolve("auto", repo)
        assert box.mode == "off" and box.wrapper() == []
        assert "not installed" in box.note and "\n" not in box.note
        with pytest.raises(Exception, match="bwrap was asked for"):
            sandbox.resolve("bwrap", repo)
    finally:
        sandbox.probe.cache_clear()


def test_bwrap_asked_for_but_unusable_is_a_usage_error(repo: Path, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", "/usr/bin/nonexistent:" + "/bin")  # keeps git and sh; /usr/bin has bwrap
    sandbox.probe.cache_clear()
    try:
        monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
        result = CliRunner().invoke(cli, ["fix", "--check", "false", "--sandbox", "bwrap"])
    finally:
        sandbox.probe.cache_clear()
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bwrap" in lines[0] and "--sandbox" in lines[0]
    assert not (repo / ".agentloop").exists()  # refused before any run started


@needs_bwrap
def test_tools_under_tmp_stay_visible_read_only(repo: Path, tmp_path: Path, monkeypatch):
    """A venv made under /tmp (CI clones often live there) is still on PATH inside the private /tmp."""
    tools = Path("/tmp") / f"agentloop-tools-{tmp_path.name}"
    (tools / "bin").mkdir(parents=True)
    try:
        script = tools / "bin" / "mytool"
        script.write_text("#!/bin/sh\necho tool-ran\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools / 'bin'}:{__import__('os').environ['PATH']}")
        result = boxed(repo, f"mytool && echo x > {tools / 'written'}")
        assert "tool-ran" in result.output  # without the bind, /bin/sh: mytool: not found
        assert result.exit_code != 0 and not (tools / "written").exists()  # visible, but read-only
    finally:
        import shutil

        shutil.rmtree(tools)


@needs_bwrap
def test_worktree_under_the_git_dir_is_writable_git_and_records_are_not(repo: Path, tmp_path: Path):
    """The default layout: the run's worktree lives under .git/agentloop/worktrees/<id>. Binding .git
    read-only used to make the whole workspace read-only (touch: Read-only file system)."""
    state = repo / ".git" / "agentloop"
    wt = state / "worktrees" / "run1"
    wt.parent.mkdir(parents=True)
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(wt)], cwd=repo, check=True)
    (state / "runs").mkdir()
    (state / "runs" / "run1.json").write_text('{"secret": "RECORD"}')
    runs = repo / ".agentloop" / "runs"
    runs.mkdir(parents=True)
    (runs / "hidden.log").write_text("HIDDEN ASSERTION")
    (repo / "notes.txt").write_text("USER TREE")
    box = sandbox.resolve("bwrap", wt, [repo / ".git" / "worktrees" / "run1", repo / ".git"], runs,
                          user_root=repo, state_dir=state)
    probe = (f"touch build.stamp && mkdir -p out && echo o > out/a.o && echo ok-writes; "
             f"echo x >> .git; echo x >> {repo}/.git/config; echo x >> {repo}/.git/worktrees/run1/HEAD; "
             f"cat {runs}/hidden.log {state}/runs/run1.json {repo}/notes.txt; git status --porcelain >/dev/null && "
             "echo git-reads-ok; true")
    result = run_command(probe, wt, timeout=30, wrapper=box.wrapper())
    assert "ok-writes" in result.output and (wt / "build.stamp").exists() and (wt / "out" / "a.o").exists()
    assert result.output.count("Read-only file system") == 3, result.output
    for secret in ("HIDDEN ASSERTION", "RECORD", "USER TREE"):
        assert secret not in result.output
    assert "git-reads-ok" in result.output
    assert "x" not in (repo / ".git" / "config").read_text().splitlines()


@needs_bwrap
def test_every_run_sees_its_workspace_at_one_stable_path(repo: Path):
    """rustc's incremental cache and cargo's fingerprints key on absolute paths: a path per run id
    would rebuild from nothing every run."""
    state = repo / ".git" / "agentloop"
    seen = []
    for run in ("run1", "run2"):
        wt = state / "worktrees" / run
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(wt)], cwd=repo, check=True)
        (wt / f"{run}.txt").write_text(run)
        box = sandbox.resolve("bwrap", wt, [repo / ".git"], user_root=repo, state_dir=state)
        result = run_command("pwd; ls; git rev-parse --is-inside-work-tree", wt, timeout=30, wrapper=box.wrapper())
        assert f"{run}.txt" in result.output and "true" in result.output, result.output
        seen.append(result.output.splitlines()[0])
    assert seen == [str(state / sandbox.STABLE_NAME)] * 2


@needs_bwrap
def test_in_the_sandbox_every_process_of_a_check_dies_with_it_and_no_reaper_is_started(repo: Path, monkeypatch):
    """The sandbox's PID namespace does the reaper's work (checks.reaped_by), so no reaper starts:
    a setsid straggler of a passing check, or of one that timed out, dies with it; exit codes keep
    the reaper's meaning (128 + N for a signal)."""
    import time

    from agentloop.workspace.checks import reaped_by

    box = sandbox.resolve("bwrap", repo, [repo / ".git"])
    assert reaped_by(box.wrapper()) and not reaped_by([])
    started: list[list[str]] = []
    real = subprocess.Popen.__init__

    def recording(self, args, *rest, **kwargs):
        started.append([str(a) for a in args])
        return real(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording)

    def alive(name: str) -> list[str]:
        found = subprocess.run(["pgrep", "-fax", name], capture_output=True, text=True).stdout  # (`sleep 300`: not it)
        return [line for line in found.splitlines() if "pgrep" not in line]

    result = boxed(repo, "setsid sh -c 'sleep 1; touch survivor' & (setsid sleep 61 &) ; echo started")
    assert result.passed and "started" in result.output
    assert not any("reaper" in " ".join(argv) for argv in started) and started[-1][0].endswith("bwrap")
    timed = run_command("setsid sh -c 'sleep 1.5; touch survivor2' & sleep 30", repo, timeout=0.5,
                        wrapper=box.wrapper())
    assert timed.timed_out
    time.sleep(1.8)
    assert not (repo / "survivor").exists() and not (repo / "survivor2").exists()
    assert alive("sleep 61") == [] and alive("sleep 30") == []
    assert boxed(repo, "kill -9 $$").exit_code == 137 and boxed(repo, "exit 3").exit_code == 3
