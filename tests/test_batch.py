"""`agentloop batch`: real task files over real temp git repos, the scripted model over real HTTP,
rollouts in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, FIX_ADD, PYTEST, git, make_repo
from fake_llm import FakeLLM

from agentloop.batch.driver import read_results
from agentloop.batch.rollout import run_rollout
from agentloop.batch.tasks import load_tasks
from agentloop.cli import cli
from agentloop.record.trajectory import read_events

HELD_TEST = "from calc import add\n\n\ndef test_add_more():\n    assert add(10, 5) == 15\n"


def write_tasks(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def world(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    held = tmp_path / "held-out"
    held.mkdir()
    (held / "test_held.py").write_text(HELD_TEST)
    return repo, held


def fixable(repo: Path, held: Path, task_id: str = "calc-1", **extra) -> dict:
    return {"id": task_id, "task": "add() must return the sum", "source": {"path": str(repo), "commit": "HEAD"},
            "checks": [f"{PYTEST} test_calc.py"], "accept": [f"{PYTEST} held"],
            "accept_files": {str(held): "held"}, "limits": {"max_turns": 2}, **extra}


def impossible(repo: Path, task_id: str = "never") -> dict:
    return {"id": task_id, "task": "make it pass", "source": {"path": str(repo)},
            "checks": [f"{PYTEST} test_calc.py"], "accept": ["exit 1"], "limits": {"max_turns": 1}}


def batch(tasks: Path, out: Path, server_base: str, *args: str):
    result = CliRunner().invoke(cli, ["batch", str(tasks), "-o", str(out), "-m", "openai/fake",
                                      "--api-base", server_base, "--sandbox", "off", *args])
    return result


def test_rollout_passes_in_a_private_repo_and_never_touches_the_source(world, tmp_path):
    repo, held = world
    head = git(repo, "rev-parse", "HEAD")
    row = load_tasks(write_tasks(tmp_path, [fixable(repo, held)]))[0]
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = run_rollout(row, 0, tmp_path / "out", model="openai/fake", api_base=server.api_base, sandbox="off")
    assert result["status"] == "passed", result
    assert result["reward"] > 0 and result["turns"] == 1 and result["tokens"] == 120
    run_dir = Path(result["run_dir"])
    assert run_dir.is_relative_to(tmp_path / "out" / "rollouts" / "calc-1" / "0")
    header = read_events(run_dir / "trajectory.jsonl")[0]
    assert header["task_id"] == "calc-1" and header["sample"] == 0 and header["group_id"] == "calc-1"
    # The source repository: same commit, same files, no new branches or worktrees.
    assert git(repo, "rev-parse", "HEAD") == head
    assert "return a - b" in (repo / "calc.py").read_text()
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert "return a + b" in (tmp_path / "out" / "rollouts" / "calc-1" / "0" / "repo" / "calc.py").read_text()


def test_plain_directory_source_is_snapshotted(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "calc.py").write_text(BUGGY_CALC)
    (folder / "test_calc.py").write_text(CALC_TEST)
    row = load_tasks(write_tasks(tmp_path, [{"id": "plain", "task": "fix add", "source": {"path": str(folder)},
                                             "checks": [f"{PYTEST} test_calc.py"], "setup": ["touch built.txt"]}]))[0]
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = run_rollout(row, 0, tmp_path / "out", model="openai/fake", api_base=server.api_base, sandbox="off")
    assert result["status"] == "passed", result
    assert not (folder / ".git").exists() and not (folder / "built.txt").exists()
    assert "return a - b" in (folder / "calc.py").read_text()
    assert (tmp_path / "out" / "rollouts" / "plain" / "0" / "repo" / "built.txt").exists()


def test_failed_setup_is_an_infra_error(world, tmp_path):
    repo, held = world
    row = load_tasks(write_tasks(tmp_path, [fixable(repo, held, setup=["exit 7"])]))[0]
    result = run_rollout(row, 0, tmp_path / "out", model="openai/fake", api_base="http://127.0.0.1:9/v1",
                         sandbox="off")
    assert result["status"] == "infra_error" and "exited 7" in result["reason"]


def test_batch_statuses_results_and_resume(world, tmp_path):
    repo, held = world
    tasks = write_tasks(tmp_path, [fixable(repo, held, samples=2), impossible(repo)])
    out = tmp_path / "out"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        first = batch(tasks, out, server.api_base, "-w", "2")
        assert first.exit_code == 0, first.output
        assert "[3/3] " in first.output and "\x1b[" not in first.output  # not a terminal: plain lines
        results = read_results(out / "results.jsonl")
        assert sorted((r["id"], r["sample"], r["status"]) for r in results) == [
            ("calc-1", 0, "passed"), ("calc-1", 1, "passed"), ("never", 0, "failed")]
        for r in results:
            assert set(r) >= {"status", "reward", "turns", "tokens", "cost", "seconds", "run_dir", "group_id"}
            assert Path(r["run_dir"], "summary.json").is_file()
        failed = next(r for r in results if r["id"] == "never")
        assert failed["reward"] < 0
        exported = tmp_path / "rlef.jsonl"
        export = CliRunner().invoke(cli, ["export", "--format", "rlef", "--out", str(exported),
                                          *map(str, sorted(out.glob("rollouts/*/*/runs")))])
        assert export.exit_code == 0, export.output
        groups = sorted(json.loads(line)["group_id"] for line in exported.read_text().splitlines())
        assert groups == ["calc-1", "calc-1", "never"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["settings"]["model"] == "openai/fake" and len(manifest["tasks_sha256"]) == 64
        calls = len(server.requests)

        # Rerun: nothing to do, no model call, results unchanged.
        again = batch(tasks, out, server.api_base)
        assert again.exit_code == 0, again.output
        assert "0 to run" in again.output and len(server.requests) == calls
        assert len(read_results(out / "results.jsonl")) == 3

        # A rollout whose result line never made it (a crash): rerun does it, clearing its folder.
        lines = (out / "results.jsonl").read_text().splitlines()
        kept = [ln for ln in lines if json.loads(ln)["id"] != "never"]
        (out / "results.jsonl").write_text("\n".join(kept) + "\n" + '{"id": "never", "sam')  # torn line
        (out / "rollouts" / "never" / "0" / "junk").write_text("half-written")
        third = batch(tasks, out, server.api_base)
        assert third.exit_code == 0, third.output
        assert "1 to run" in third.output
        assert not (out / "rollouts" / "never" / "0" / "junk").exists()
        assert sorted(r["id"] for r in read_results(out / "results.jsonl")) == ["calc-1", "calc-1", "never"]

        # Other settings: refused with one line, unless --redo-existing.
        other = batch(tasks, out, server.api_base, "--samples", "3")
        assert other.exit_code == 2 and "--redo-existing" in other.output
        redo = batch(tasks, out, server.api_base, "--samples", "1", "--redo-existing", "--filter", "^calc")
        assert redo.exit_code == 0, redo.output
        assert [(r["id"], r["status"]) for r in read_results(out / "results.jsonl")] == [("calc-1", "passed")]
        assert (out / "results.1.jsonl").is_file()


def test_unreachable_model_server_is_an_infra_error_retried_twice(world, tmp_path):
    repo, held = world
    tasks = write_tasks(tmp_path, [fixable(repo, held)])
    out = tmp_path / "out"
    result = batch(tasks, out, "http://127.0.0.1:9/v1")
    assert result.exit_code == 0, result.output
    [line] = read_results(out / "results.jsonl")
    assert line["status"] == "infra_error" and line["attempts"] == 3
    assert "connect" in line["reason"] or "reach" in line["reason"]
    exported = tmp_path / "rlef.jsonl"
    export = CliRunner().invoke(cli, ["export", "--format", "rlef", "--out", str(exported), line["run_dir"]])
    assert export.exit_code == 0, export.output
    assert exported.read_text() == ""  # an infra error is never a negative example


def test_a_stuck_rollout_is_killed_while_others_finish(world, tmp_path):
    repo, held = world
    stuck = fixable(repo, held, task_id="stuck", setup=["sleep 120"])
    stuck["limits"] = {"rollout_timeout": 1, "verify_timeout": 1}
    tasks = write_tasks(tmp_path, [stuck, fixable(repo, held, task_id="fine")])
    out = tmp_path / "out"
    started = time.monotonic()
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = batch(tasks, out, server.api_base, "-w", "2", "--kill-grace", "2")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 100
    statuses = {r["id"]: r["status"] for r in read_results(out / "results.jsonl")}
    assert statuses == {"stuck": "timeout", "fine": "passed"}


def test_bad_input_is_one_line(world, tmp_path):
    repo, held = world
    tasks = write_tasks(tmp_path, [fixable(repo, held)])
    bad_slice = batch(tasks, tmp_path / "out", "http://127.0.0.1:9/v1", "--slice", "x")
    assert bad_slice.exit_code == 2 and "--slice" in bad_slice.output
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"id": "a", "task": "t", "source": {"path": "/nonexistent"}, "checks": ["true"]}\n')
    refused = batch(bad_rows, tmp_path / "out2", "http://127.0.0.1:9/v1")
    assert refused.exit_code == 2 and "source.path" in refused.output
    assert not (tmp_path / "out2").exists()


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "agentloop[ray]")')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_runs_resumes_and_retries(world, tmp_path, ray_session):
    repo, held = world
    tasks = write_tasks(tmp_path, [fixable(repo, held, samples=2), impossible(repo)])
    out = tmp_path / "out"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        first = batch(tasks, out, server.api_base, "--backend", "ray", "-w", "2")
        assert first.exit_code == 0, first.output
        assert sorted((r["id"], r["sample"], r["status"]) for r in read_results(out / "results.jsonl")) == [
            ("calc-1", 0, "passed"), ("calc-1", 1, "passed"), ("never", 0, "failed")]
        again = batch(tasks, out, server.api_base, "--backend", "ray")
        assert again.exit_code == 0 and "0 to run" in again.output
    (tmp_path / "u").mkdir()
    unreachable = batch(write_tasks(tmp_path / "u", [impossible(repo, "u")]), tmp_path / "out-u",
                        "http://127.0.0.1:9/v1", "--backend", "ray")
    assert unreachable.exit_code == 0, unreachable.output
    [line] = read_results(tmp_path / "out-u" / "results.jsonl")
    assert line["status"] == "infra_error" and line["attempts"] == 3


@pytest.mark.slow
def test_ray_backend_kills_a_stuck_rollout_whole(world, tmp_path, ray_session):
    """On its actor: the rollout past its deadline loses its whole process group (its setup's `sleep`
    too), the actor starts another warm worker, and the next rollout runs."""
    repo, held = world
    marker = f"62.{os.getpid():08d}"
    stuck = fixable(repo, held, task_id="stuck", setup=[f"sleep {marker}"])
    stuck["limits"] = {"rollout_timeout": 1, "verify_timeout": 1}
    tasks = write_tasks(tmp_path, [stuck, fixable(repo, held, task_id="fine")])
    out = tmp_path / "out"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = batch(tasks, out, server.api_base, "--backend", "ray", "-w", "1", "--kill-grace", "2")
    assert result.exit_code == 0, result.output
    statuses = {r["id"]: r["status"] for r in read_results(out / "results.jsonl")}
    assert statuses == {"stuck": "timeout", "fine": "passed"}
    assert not _processes_running(f"sleep {marker}")


def _processes_running(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_ctrl_c_kills_running_rollouts_and_leaves_nothing_half_written(world, tmp_path):
    import signal
    import subprocess
    import sys

    repo, held = world
    marker = f"61.{os.getpid():08d}"  # this run's own: another run of this test on the machine has another
    tasks = write_tasks(tmp_path, [fixable(repo, held, task_id="slow", setup=[f"sleep {marker}"])])
    out = tmp_path / "out"
    # Started as a script's background job is (`agentloop batch ... &`): with SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-m", "agentloop", "batch", str(tasks), "-o", str(out),
                             "-m", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--sandbox", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not _processes_running(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_running(f"sleep {marker}"), "the rollout never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not _processes_running(f"sleep {marker}")
    assert not (out / "rollouts" / "slow" / "0").exists()
    assert read_results(out / "results.jsonl") == []


def test_what_a_rollout_leaves_running_is_killed_when_it_ends(world, tmp_path):
    """Rollouts are forked from one warm worker; each leads its own process group, swept when it ends."""
    repo, held = world
    marker = f"62.{os.getpid():08d}"
    tasks = write_tasks(tmp_path, [fixable(repo, held, task_id="leaves", setup=[f"sleep {marker} &"]),
                                   fixable(repo, held, task_id="other")])
    out = tmp_path / "out"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = batch(tasks, out, server.api_base, "-w", "2")
    assert result.exit_code == 0, result.output
    assert {r["id"]: r["status"] for r in read_results(out / "results.jsonl")} == {"leaves": "passed",
                                                                                   "other": "passed"}
    deadline = time.monotonic() + 5
    while _processes_running(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_running(f"sleep {marker}")
    assert not list((out / ".work").iterdir())  # job, result and log files moved or removed


def test_the_warm_worker_makes_litellms_first_call_against_its_own_local_server():
    """The warm-up reaches no provider (a server of its own on 127.0.0.1, a dummy key) and leaves
    litellm's lazily built response schemas built, for the forked rollouts to inherit."""
    import subprocess
    import sys

    probe = ("import json\n"
             "from agentloop.run.model import import_litellm\n"
             "import_litellm()\n"
             "from litellm.types.utils import ModelResponse\n"
             "from agentloop.batch.warmup import warm_up_litellm\n"
             "print(json.dumps([warm_up_litellm(), ModelResponse.__pydantic_complete__]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True]


def test_after_the_warm_worker_read_its_data_a_rollout_parses_no_yaml_and_compiles_no_template():
    """The warm worker reads models.yaml and the tool definitions and compiles the prompt templates
    once; a forked rollout then finds them ready (it used to parse and compile them all again)."""
    import subprocess
    import sys

    probe = ("import jinja2, yaml\n"
             "from agentloop.batch.warmup import warm_caches\n"
             "from agentloop.data import data_dir\n"
             "from agentloop.run import feedback, rules, toolbox\n"
             "warm_caches()\n"
             "def refuse(*a, **k):\n"
             "    raise AssertionError('parsed again')\n"
             "yaml.safe_load = refuse\n"
             "jinja2.Environment._parse = refuse\n"
             "rules.params('openai/any-model')\n"
             "assert toolbox.load_tool_specs()\n"
             "for p in data_dir('prompts').glob('*.j2'):\n"
             "    feedback._environment().get_template(p.name)\n"
             "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_rollout_forked_after_the_warm_up_makes_its_call_cleanly(tmp_path):
    """The child closes the worker's files (as batch.worker does); what the warm-up left behind must
    not be one of them (an event loop whose selector was closed logged `Bad file descriptor`)."""
    import subprocess
    import sys

    probe = ("import os, sys, threading\n"
             "from http.server import ThreadingHTTPServer\n"
             "from agentloop.batch import warmup\n"
             "from agentloop.run.model import import_litellm\n"
             "litellm = import_litellm()\n"
             "assert warmup.warm_up_litellm()\n"
             "server = ThreadingHTTPServer(('127.0.0.1', 0), warmup._Canned)\n"
             "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
             "    os.dup2(log, 2)\n"
             "    os.closerange(3, 1024)\n"
             "    r = litellm.completion(model='openai/x', api_base=f'http://127.0.0.1:{server.server_port}/v1',\n"
             "                           api_key='k', messages=[{'role': 'user', 'content': 'hi'}], max_retries=0)\n"
             "    sys.stderr.flush()\n"
             "    os._exit(0 if r.choices[0].message.content == 'ok' else 3)\n"
             "_, status = os.waitpid(pid, 0)\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")
    log = tmp_path / "child.log"
    out = subprocess.run([sys.executable, "-c", probe, str(log)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.stderr, log.read_text() if log.exists() else "")
    assert "Bad file descriptor" not in log.read_text()


def test_making_a_rollouts_repository_runs_no_hook(world, tmp_path, monkeypatch):
    """A hook installed by the user's git template (init.templateDir) would run at the rollout's
    checkout, outside any sandbox: a rollout's own repository copies no template, and where git
    clones it (a linked worktree as the source) agentloop's git runs no hook."""
    from agentloop.batch.rollout import materialise

    repo, held = world
    template = tmp_path / "template"
    (template / "hooks").mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    hook = template / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(f"[init]\n\ttemplateDir = {template}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    row = load_tasks(write_tasks(tmp_path, [fixable(repo, held)]))[0]
    materialise(row, tmp_path / "rollout" / "repo")
    assert (tmp_path / "rollout" / "repo" / "calc.py").exists()
    assert not (tmp_path / "rollout" / "repo" / ".git" / "hooks").exists()  # no template copied
    linked = tmp_path / "linked"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(linked)], cwd=repo, check=True)
    row = load_tasks(write_tasks(tmp_path, [fixable(linked, held)]))[0]
    materialise(row, tmp_path / "cloned" / "repo")  # a `.git` file: cloned by git, templates and all
    assert (tmp_path / "cloned" / "repo" / "calc.py").exists()
    assert (tmp_path / "cloned" / "repo" / ".git" / "hooks" / "post-checkout").exists()  # installed, not run
    assert not marker.exists()
