"""A hostile corpus: each scenario is an attack by the model (through its edits, its tools, or the code
the checks run) and asserts that agentloop survives it. Count: `pytest tests/test_hostile.py -rA`.

Known loss, kept visible as a strict xfail: without the sandbox, a check run as root can read
agentloop's own environment from /proc (a normal user cannot: agentloop is not dumpable while checks
run; under the sandbox a PID namespace hides agentloop altogether).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from conftest import CALC_TEST, make_repo

from agentloop.edits import apply_reply
from agentloop.run.model import ToolCall
from agentloop.run.toolbox import Toolbox
from agentloop.workspace import sandbox
from agentloop.workspace.checks import check_env, run_command
from agentloop.workspace.repo import Workspace

KEY = "sk-proj-HOSTILEhostileHOSTILE0123456789"
NO_BWRAP = sandbox.probe()
bwrap_only = pytest.mark.skipif(NO_BWRAP is not None, reason=f"bubblewrap cannot run here: {NO_BWRAP}")


def sr(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a + b\n", "tests/test_calc.py":
                                         CALC_TEST.replace("from calc import add, mul", "from calc import add")
                                         .split("\n\n\ndef test_mul")[0] + "\n"})


def files_outside(tmp_path: Path, repo: Path) -> set[str]:
    return {str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(repo)}


def agentloop_fix(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in its own process (its environment is its own, as for a user)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    return subprocess.run([sys.executable, "-m", "agentloop", "fix", "-m", "openai/fake", "--json", *args], cwd=repo,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=120)


def leaked(repo: Path, secret: str) -> list[str]:
    return [str(p) for p in (repo / ".agentloop").rglob("*") if p.is_file()
            and secret in p.read_text(errors="replace")]


# -- edits -----------------------------------------------------------------------------------------


def test_edit_path_traversal(repo, tmp_path):
    res = apply_reply(repo, sr("../evil.py", "", "x = 1\n") + sr("tests/../../evil2.py", "", "x = 1\n"))
    assert not res.applied and {f.reason for f in res.failures} == {"path_refused"}
    assert files_outside(tmp_path, repo) == set()


def test_edit_absolute_path(repo, tmp_path):
    target = tmp_path / "abs.py"
    res = apply_reply(repo, sr(str(target), "", "x = 1\n"))
    assert not res.applied and "absolute" in res.failures[0].message and not target.exists()


def test_edit_through_symlink_escape(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "link").symlink_to(outside)
    (repo / "linkfile.py").symlink_to(outside / "f.py")
    res = apply_reply(repo, sr("link/evil.py", "", "x = 1\n"))
    res2 = apply_reply(repo, sr("linkfile.py", "", "x = 1\n"))
    assert not res.applied and not res2.applied and list(outside.iterdir()) == []


def test_edit_into_git_hooks(repo):
    res = apply_reply(repo, sr(".git/hooks/pre-commit", "", "rm -rf ~\n"))
    (repo / "hooks").symlink_to(repo / ".git" / "hooks")
    res2 = apply_reply(repo, sr("hooks/post-checkout", "", "rm -rf ~\n"))
    assert not res.applied and not res2.applied
    assert not (repo / ".git/hooks/pre-commit").exists() and not (repo / ".git/hooks/post-checkout").exists()


def test_edit_protected_file_refused_with_reason(repo):
    res = apply_reply(repo, sr("tests/test_calc.py", "    assert add(2, 3) == 5\n", "    pass\n"),
                      protect=["tests/**"])
    assert not res.applied and res.failures[0].reason == "protected"
    assert "protected" in res.failures[0].message and "may not be edited" in res.failures[0].message


def test_edit_through_a_symlink_to_a_protected_file(repo):
    (repo / "helper.py").symlink_to("tests/test_calc.py")  # e.g. made by code a check ran
    before = (repo / "tests/test_calc.py").read_text()
    res = apply_reply(repo, sr("helper.py", "    assert add(2, 3) == 5\n", "    pass\n"), protect=["tests/**"])
    assert not res.applied and res.failures[0].reason == "protected"
    assert (repo / "tests/test_calc.py").read_text() == before

def test_edit_into_run_records(repo):
    res = apply_reply(repo, sr(".agentloop/runs/x/summary.json", "", "{}\n"))
    assert not res.applied and not (repo / ".agentloop").exists()


# -- tools -----------------------------------------------------------------------------------------


def test_tools_cannot_read_git_history_or_run_records(repo):
    git_ = subprocess.run
    git_(["git", "commit", "-q", "--allow-empty", "-m", "future: the answer is 42"], cwd=repo, check=True)
    git_(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, check=True)  # a "future" commit, off HEAD
    (repo / "gitlink").symlink_to(repo / ".git")
    (repo / "cfg").symlink_to(repo / ".git" / "config")
    (repo / ".agentloop/runs/r1/checks").mkdir(parents=True)
    (repo / ".agentloop/runs/r1/checks/0001.log").write_text("hidden acceptance output\n")
    box = Toolbox(repo, Workspace(repo).list_files)
    calls = [("read_file", {"path": ".git/HEAD"}), ("read_file", {"path": ".git/logs/HEAD"}),
             ("read_file", {"path": "gitlink/ORIG_HEAD"}), ("read_file", {"path": "cfg"}),
             ("list_files", {"path": ".git"}), ("search", {"pattern": "future", "path": ".git"}),
             ("read_file", {"path": ".agentloop/runs/r1/checks/0001.log"}),
             ("list_files", {"path": ".agentloop"})]
    for name, args in calls:
        answer = box.answer(ToolCall(id="c", name=name, arguments=__import__("json").dumps(args)))
        assert not answer.ok, (name, args, answer.output)
    found = box.answer(ToolCall(id="c", name="search", arguments='{"pattern": "future|repositoryformat"}'))
    assert "future" not in found.output and "repositoryformat" not in found.output


# -- checks: environment and secrets ---------------------------------------------------------------------


def test_check_cannot_read_provider_key_from_its_environment(repo):
    check = 'env | grep -q -e "$(printf %s sk-proj-HOSTILE)" -e MY_SERVICE_TOKEN && exit 1 || exit 0'
    proc = agentloop_fix(repo, "--check", check, "--sandbox", "off",
                         env={"OPENAI_API_KEY": KEY, "MY_SERVICE_TOKEN": "tok-hostile-123456"})
    assert proc.returncode == 0, proc.stderr  # the check passed: it saw neither
    assert leaked(repo, KEY) == [] and leaked(repo, "tok-hostile-123456") == []


@bwrap_only
def test_check_cannot_read_provider_key_from_agentloop_proc_sandboxed(repo):
    check = f'grep -l -a "$(printf %s {KEY[:12]})" /proc/[0-9]*/environ 2>/dev/null | grep -q . && exit 1; exit 0'
    proc = agentloop_fix(repo, "--check", check, "--sandbox", "bwrap", env={"OPENAI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.xfail(os.geteuid() == 0, strict=True,
                   reason="known loss: unsandboxed, a check run by root can read agentloop's /proc/<pid>/environ "
                          "(root ignores the non-dumpable flag); use sandbox: auto/bwrap")
def test_check_cannot_read_provider_key_from_agentloop_proc_unsandboxed(repo):
    check = f'grep -l -a "$(printf %s {KEY[:12]})" /proc/[0-9]*/environ 2>/dev/null | grep -q . && exit 1; exit 0'
    proc = agentloop_fix(repo, "--check", check, "--sandbox", "off", env={"OPENAI_API_KEY": KEY})
    assert proc.returncode == 0


PROBE = "import agentloop.cli, subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="needs root and setpriv to run agentloop as an unprivileged user")
def test_check_cannot_read_provider_key_from_agentloop_proc_as_a_normal_user():
    """Unsandboxed, as a normal user: agentloop is not dumpable while checks run, so its
    /proc/<pid>/environ is closed to them."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="agentloop-hostile-user-", dir="/var/tmp"))
    try:
        repo = make_repo(top / "repo", {"a.txt": "a\n"})
        subprocess.run(["chown", "-R", "65534:65534", str(top)], check=True)
        check = f'grep -l -a "$(printf %s {KEY[:12]})" /proc/[0-9]*/environ 2>/dev/null | grep -q . && exit 1; exit 0'
        env = {"PATH": os.environ["PATH"], "HOME": str(top), "OPENAI_API_KEY": KEY,
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), sysconfig.get_paths()["purelib"]])}
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        python = next((p for p in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
                       if subprocess.run([*nobody, p, "-c", PROBE], cwd=top, env=env,
                                         capture_output=True).returncode == 0), None)
        if python is None:
            pytest.skip("no Python that an unprivileged user may run with agentloop importable")
        proc = subprocess.run([*nobody, python, "-m", "agentloop", "fix", "-m", "openai/fake", "--check", check,
                               "--sandbox", "off"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        shutil.rmtree(top)

def test_secrets_in_output_and_edits_are_masked_on_disk(repo, monkeypatch):
    from fake_llm import FakeLLM
    from test_fix_e2e import run_fix

    token, aws = "svc-hostile-token-987654", "AKIAHOSTILE234567890"
    monkeypatch.setenv("MY_SERVICE_TOKEN", token)
    (repo / ".agentloop.yaml").write_text("pass_env: [MY_SERVICE_TOKEN]\n")
    check = f'echo "token=$MY_SERVICE_TOKEN {KEY} {aws}"; test -f done.txt'
    reply = sr("done.txt", "", f"OPENAI_API_KEY={KEY}\nTOKEN={token}\n")
    with FakeLLM([{"content": reply}]) as server:
        code, summary, _ = run_fix(repo, server, "--check", check, "--sandbox", "off", monkeypatch=monkeypatch)
    assert code == 0
    run_dir = Path(summary["run_dir"])
    assert "[REDACTED]" in (run_dir / "final.patch").read_text()
    for secret in (token, KEY, aws):
        assert leaked(repo, secret) == []
    assert check_env(base={"MY_SERVICE_TOKEN": token}) == {}  # passed only because the config names it


# -- checks: processes and output ------------------------------------------------------------------


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def test_infinite_loop_is_killed_within_a_second(repo, reaping):
    marker = f"hostile-loop-{os.getpid()}"
    started = time.monotonic()
    result = run_command(f"while :; do : {marker}; done", repo, timeout=1)
    assert result.timed_out and time.monotonic() - started < 2.0
    assert _alive(marker) == []


def test_setsid_child_outliving_its_parent_is_killed(repo, tmp_path, reaping):
    marker = tmp_path / "survivor"
    result = run_command(f"setsid sh -c 'sleep 1; touch {marker}' & (setsid sleep 61 &) ; echo started",
                         repo, timeout=10)
    assert result.passed and "started" in result.output
    time.sleep(1.5)
    assert not marker.exists() and _alive("sleep 61") == []


def test_setsid_child_is_killed_on_timeout(repo, tmp_path, reaping):
    marker = tmp_path / "survivor"
    started = time.monotonic()
    result = run_command(f"setsid sh -c 'sleep 1.5; touch {marker}' & sleep 30", repo, timeout=0.5)
    assert result.timed_out and time.monotonic() - started < 1.5
    time.sleep(1.5)
    assert not marker.exists()


@pytest.mark.parametrize("box", ["off", "bwrap", "one reaper"])
def test_checks_die_when_agentloop_is_killed(repo, box):
    """SIGKILL to agentloop mid-check (no cleanup code runs): the reaper's parent-death signal, or
    the sandbox's (--die-with-parent: its PID namespace dies), still takes the check's whole tree
    down, setsid children included. ("one reaper": a process whose checks share one long-lived
    reaper, as a batch runner's do.)"""
    from agentloop.workspace import sandbox

    if box == "bwrap" and sandbox.probe() is not None:
        pytest.skip(f"bubblewrap cannot run here: {sandbox.probe()}")
    marker = f"hostile-orphan-{os.getpid()}-{box.replace(' ', '-')}"
    check = f"setsid sh -c 'sleep 41; : {marker}' & sh -c 'sleep 42; : {marker}'; true"
    if box == "one reaper":
        argv = [sys.executable, "-c", "import sys\n"
                "from agentloop.workspace import checks, reaper_client\n"
                "reaper_client.use_one_reaper()\n"
                "checks.run_command('true', '.')\n"
                "checks.run_command(sys.argv[1], '.')\n", check]
    else:
        argv = [sys.executable, "-m", "agentloop", "fix", "-m", "openai/fake", "--check", check, "--sandbox", box]
    proc = subprocess.Popen(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len([p for p in _alive(marker) if "sleep" in p]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len([p for p in _alive(marker) if "sleep" in p]) >= 2
    proc.kill()
    proc.wait()
    time.sleep(1.0)
    assert [p for p in _alive(marker) if "sleep" in p] == []

FORK_STORM = r"""
import os, sys, time
depth = 0
for _ in range(4):  # 1 + 3 + 9 + 27 + 81 = 121 processes, some in their own sessions
    kids = 0
    for _ in range(3):
        if os.fork() == 0:
            depth += 1
            if depth % 2:
                os.setsid()
            break
        kids += 1
    else:
        break
time.sleep(60)
"""


def test_fork_storm_kept_small_is_wiped_out(repo, reaping):
    marker = f"hostile-storm-{os.getpid()}"
    (repo / "storm.py").write_text(FORK_STORM)
    started = time.monotonic()
    result = run_command(f"exec python3 storm.py {marker}", repo, timeout=3)
    assert result.timed_out and time.monotonic() - started < 4.0
    time.sleep(0.2)
    assert _alive(marker) == []


def test_gigabytes_of_output_keep_memory_bounded(repo, tmp_path):
    """256 MiB here to keep CI short; benchmarks/bench_runner.py measures the full 1 GiB."""
    child = f"""
import json
from pathlib import Path
from agentloop.workspace.checks import run_command
from agentloop.record.trajectory import Trajectory
log = Trajectory(Path({str(tmp_path / 'run')!r})).check_log()
r = run_command("yes 0123456789abcdef | head -c {256 << 20}", Path({str(repo)!r}), output_sink=log.feed)
log.close()
# VmHWM: peak RSS of this process image (ru_maxrss would include the forking parent's, pytest's)
hwm = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
print(json.dumps([r.total_bytes, len(r.output), hwm, log.path.stat().st_size]))
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, timeout=300)
    total, kept, rss_kb, log_size = __import__("json").loads(out.stdout)
    assert total == 256 << 20 and kept < 11_000
    assert rss_kb < 200 * 1024  # the brief's bound: agentloop stays under 200 MB
    assert log_size < (4 << 20) + 200


# -- checks: the sandbox ---------------------------------------------------------------------------


@bwrap_only
def test_check_cannot_write_git_hooks_or_outside(repo, tmp_path):
    target = Path.home() / f".agentloop-hostile-{tmp_path.name}"
    check = f"echo evil > .git/hooks/post-checkout; echo evil > {target}; true"
    proc = agentloop_fix(repo, "--check", check)  # the default sandbox: auto
    assert proc.returncode == 0, proc.stderr
    assert not (repo / ".git/hooks/post-checkout").exists() and not target.exists()


def _accept(server: socket.socket, into: list) -> None:
    """Record a connection, if any arrives before the listener is closed."""
    try:
        into.append(server.accept())
    except OSError:
        pass


@bwrap_only
def test_check_cannot_read_credential_files_in_home(repo, monkeypatch):
    import shutil
    import tempfile

    # Not under /tmp: the sandbox has its own empty /tmp, which would hide this home wholesale.
    home = Path(tempfile.mkdtemp(prefix="agentloop-hostile-home-", dir="/var/tmp"))
    monkeypatch.setenv("HOME", str(home))
    try:
        _credentials_hidden(repo, home)
    finally:
        shutil.rmtree(home)


def _credentials_hidden(repo: Path, home: Path) -> None:
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(f"aws_secret_access_key = {KEY}\n")
    (home / ".bashrc").write_text(f"export OPENAI_API_KEY={KEY}\n")
    (home / "notes.txt").write_text("readable\n")
    box = sandbox.resolve("bwrap", repo)
    check = "cat ~/notes.txt; cat ~/.aws/credentials ~/.bashrc 2>&1 | grep -q HOSTILE && exit 1; exit 0"
    result = run_command(check, repo, env=check_env(), wrapper=box.wrapper())
    assert result.passed and "readable" in result.output  # the rest of home stays readable
    unboxed = run_command(check, repo, env=check_env())
    assert not unboxed.passed  # the control: outside the sandbox the files are there to read

@bwrap_only
def test_check_has_no_network(repo):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    hits: list[object] = []
    threading.Thread(target=_accept, args=(server, hits), daemon=True).start()
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    check = f"python3 -c \"{connect}\" && exit 1; exit 0"
    try:
        proc = agentloop_fix(repo, "--check", check)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert hits == []


@pytest.mark.parametrize("mode", ["off", pytest.param("bwrap", marks=bwrap_only)])
def test_test_rewritten_through_a_helper_module_is_not_accepted(tmp_path, monkeypatch, mode):
    from test_guard import CALC, TEST_A, TEST_CALC, fix

    repo = make_repo(tmp_path / "r", {"calc.py": CALC, "test_a.py": TEST_A, "test_calc.py": TEST_CALC,
                                      ".agentloop.yaml": "protect: ['test_*.py', conftest.py]\n"})
    code, summary, _, _ = fix(repo, monkeypatch, "--sandbox", mode)
    assert summary["outcome"] != "accepted" and (repo / "test_calc.py").read_text() == TEST_CALC
