"""The fork server's runners (agentloop.batch.worker): real `--serve` loops, real forks and pipes.

Most tests run the server's own loop with only the rollout replaced (a function that changes what a
rollout could change in its process: environment, working folder, signal handlers, children left
running), so what the runner puts back between rollouts is seen from the outside. One test runs real
rollouts through two jobs in a row and checks they shared a runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import BUGGY_CALC, CALC_TEST, FIX_ADD, PYTEST, make_repo
from fake_llm import FakeLLM

from agentloop.batch.pool import ForkServer
from agentloop.batch.tasks import validate_row
from agentloop.batch.worker import job_for

# The server's loop with the rollout replaced: `job["act"]` says what the fake rollout does.
HARNESS = textwrap.dedent("""
    import json, os, signal, subprocess, sys
    import agentloop.batch.worker as w

    def fake_rollout(job):
        seen = {"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("ROLLOUT_MARK"),
                "kept": os.environ.get("SERVER_MARK"),
                "sigterm": str(signal.getsignal(signal.SIGTERM))}
        act = job.get("act")
        if act == "meddle":
            os.environ["ROLLOUT_MARK"] = job["name"]
            os.chdir("/")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            subprocess.Popen(["sleep", job["leave"]], start_new_session=True)  # escapes its group, not us
        elif act == "raise":
            raise RuntimeError("the rollout broke")
        elif act == "hang":
            subprocess.run(["sleep", job["leave"]])
        print("a rollout's own output")
        with open(job["result"], "w") as fh:
            json.dump(seen, fh)

    w.preload = lambda: None
    w.run_and_write = fake_rollout
    w.ROLLOUTS_PER_RUNNER = int(sys.argv[1])
    raise SystemExit(w.serve())
""")


class Server:
    """`serve()` in a subprocess: jobs in, events out."""

    def __init__(self, tmp: Path, per_runner: int = 100):
        self.tmp = tmp
        self.proc = subprocess.Popen([sys.executable, "-c", HARNESS, str(per_runner)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=tmp, start_new_session=True,
                                     env={**os.environ, "SERVER_MARK": "kept"})
        assert self.read() == {"ready": True}

    def send(self, *messages: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        self.proc.stdin.flush()

    def job(self, name: str, **job) -> dict:
        return {"name": name, "job": {"name": name, "result": str(self.tmp / f"{name}.json"),
                                      "log": str(self.tmp / f"{name}.log"), **job}}

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the server closed its output"
        return json.loads(line)

    def run(self, name: str, **job) -> tuple[int, int, dict | None]:
        """One job start to end: (runner pid, exit code, what the fake rollout saw)."""
        self.send(self.job(name, **job))
        started = self.read()
        assert started["name"] == name, started
        ended = self.read()
        assert ended["name"] == name, ended
        result = self.tmp / f"{name}.json"
        return started["started"], ended["code"], json.loads(result.read_text()) if result.exists() else None

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def _running(marker: str) -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    return True
            except OSError:
                continue
    return False


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _gone(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(marker)


def test_a_runner_runs_rollouts_in_turn_and_puts_its_process_back_between_them(tmp_path):
    marker = f"63.{os.getpid():08d}"
    server = Server(tmp_path)
    first_pid, code, first = server.run("a", act="meddle", leave=marker)
    assert code == 0 and first is not None
    assert _gone(marker), "what the first rollout left running outlived it"
    second_pid, code, second = server.run("b")
    assert code == 0 and second is not None
    assert second_pid == first_pid == first["pid"] == second["pid"]  # one runner, no new fork
    assert second["env"] is None and second["kept"] == "kept" and second["cwd"] == first["cwd"] == str(tmp_path)
    assert second["sigterm"] == first["sigterm"] == str(signal.SIG_DFL)
    assert (tmp_path / "a.log").read_text() == "a rollout's own output\n"  # each its own log
    assert (tmp_path / "b.log").read_text() == "a rollout's own output\n"
    assert server.close() == 0


def test_a_rollout_that_raised_ends_its_runner_and_the_next_job_gets_a_new_one(tmp_path):
    server = Server(tmp_path)
    broken_pid, code, result = server.run("broken", act="raise")
    assert code == 1 and result is None
    assert "RuntimeError: the rollout broke" in (tmp_path / "broken.log").read_text()
    next_pid, code, _ = server.run("next")
    assert code == 0 and next_pid != broken_pid
    assert server.close() == 0


def test_a_runner_retires_after_its_quota_of_rollouts(tmp_path):
    server = Server(tmp_path, per_runner=2)
    pids = [server.run(name)[0] for name in ("one", "two", "three")]
    assert pids[0] == pids[1] != pids[2]
    assert server.close() == 0


def test_kill_drops_a_job_not_started_and_kills_a_running_one_whole(tmp_path):
    marker = f"64.{os.getpid():08d}"
    server = Server(tmp_path)
    server.send(server.job("hung", act="hang", leave=marker))
    started = server.read()
    deadline = time.monotonic() + 10
    while not _running(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send({"kill": "hung"})
    assert server.read() == {"ended": started["started"], "name": "hung", "code": -signal.SIGKILL}
    assert _gone(marker)
    # Asked to kill a job in the same breath as it was sent: it never starts.
    server.send(server.job("never"), {"kill": "never"})
    assert server.read() == {"ended": 0, "name": "never", "code": -signal.SIGKILL}
    assert not (tmp_path / "never.json").exists()
    _, code, _ = server.run("after")
    assert code == 0
    assert server.close() == 0


def test_real_rollouts_one_after_another_share_a_runner(tmp_path):
    """Through the driver's own handle on the real server: two rollouts, the same runner (and the same
    long-lived reaper for their checks: agentloop.workspace.reaper_client), both pass."""
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    row, problems = validate_row({"id": "calc", "task": "add() must return the sum", "source": {"path": str(repo)},
                                  "checks": [f"{PYTEST} test_calc.py"], "limits": {"max_turns": 2}}, "row", tmp_path)
    assert row is not None, problems
    server = ForkServer()
    try:
        with FakeLLM([{"content": FIX_ADD}, {"content": FIX_ADD}]) as llm:
            settings = {"model": "openai/fake", "api_base": llm.api_base, "sandbox": "off"}
            runners, reapers, results = [], [], []
            for sample in (0, 1):
                result = tmp_path / f"r{sample}.json"
                server.send(f"calc/{sample}", job_for(row, sample, tmp_path / "out", settings, "calc", result,
                                                      log=tmp_path / f"r{sample}.log"))
                assert server.wait_for(f"calc/{sample}", time.monotonic() + 120) == 0, \
                    (tmp_path / f"r{sample}.log").read_text()
                results.append(json.loads(result.read_text()))
                runners.append(_children(server.proc.pid))
                reapers.append(_children(int(runners[-1][0])))
        assert [r["status"] for r in results] == ["passed", "passed"]
        assert len(runners[0]) == 1 and runners[1] == runners[0]  # the same runner, still waiting
        assert len(reapers[0]) == 1 and reapers[1] == reapers[0]  # and its checks' one reaper, nothing else
    finally:
        server.close()


def test_the_driver_kill_returns_once_the_rollout_is_gone(tmp_path):
    """ForkServer.kill_rollout asks the server and waits for its word: when it returns, nothing of the
    rollout runs (its setup's `sleep` included), so the driver may clean up its files at once."""
    marker = f"65.{os.getpid():08d}"
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    row, problems = validate_row({"id": "stuck", "task": "t", "source": {"path": str(repo)},
                                  "setup": [f"sleep {marker}"], "checks": [f"{PYTEST} test_calc.py"]}, "row", tmp_path)
    assert row is not None, problems
    server = ForkServer()
    try:
        settings = {"model": "openai/fake", "api_base": "http://127.0.0.1:9/v1", "sandbox": "off"}
        server.send("stuck", job_for(row, 0, tmp_path / "out", settings, "stuck", tmp_path / "r.json"))
        deadline = time.monotonic() + 60
        while not _running(f"sleep {marker}") and time.monotonic() < deadline:
            server.pump()
            time.sleep(0.05)
        assert _running(f"sleep {marker}"), "the rollout never started"
        assert server.kill_rollout("stuck", within=60)
        assert not _running(f"sleep {marker}")
        time.sleep(0.5)
        assert "stuck" not in server.pump()  # its end was read by the kill (and is not reported twice)
    finally:
        server.close()


def test_a_runner_killed_while_idle_is_replaced_and_its_next_job_runs(tmp_path):
    server = Server(tmp_path)
    first_pid, code, _ = server.run("a")
    assert code == 0
    os.kill(server.proc.pid, signal.SIGSTOP)  # the server sees the death and the next job at once
    try:
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{first_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the runner did not die"
            time.sleep(0.01)
        server.send(server.job("b"))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    started, ended = server.read(), server.read()
    assert started["name"] == ended["name"] == "b" and started["started"] != first_pid
    assert ended["code"] == 0 and json.loads((tmp_path / "b.json").read_text())["pid"] == started["started"]
    assert server.close() == 0
