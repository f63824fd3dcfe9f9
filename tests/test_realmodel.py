"""Two suite tasks through `agentloop fix` against a real model server (not run by default).

    python benchmarks/local_model.py            # prints the --api-base
    AGENTLOOP_TEST_API_BASE=http://127.0.0.1:8080/v1 python -m pytest -q -m realmodel

AGENTLOOP_TEST_MODEL names the model (default openai/qwen2.5-coder-1.5b). The real model may fail a
task; what must hold is that every run ends cleanly (accepted, gave_up or budget_exhausted) within
its time limit with a valid trajectory, and the easiest task is fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import validate_event

from agentloop.record.trajectory import read_events

API_BASE = os.environ.get("AGENTLOOP_TEST_API_BASE")  # read now: an autouse fixture clears AGENTLOOP_*
MODEL = os.environ.get("AGENTLOOP_TEST_MODEL", "openai/qwen2.5-coder-1.5b")
ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT = 420

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not API_BASE, reason="set AGENTLOOP_TEST_API_BASE to a real model server")]


def _suite():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_suite", ROOT / "benchmarks" / "run_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_suite"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["wrong_operator", "off_by_one"])
def test_a_suite_task_against_the_real_model(name, tmp_path):
    suite = _suite()
    (task,) = suite.load_tasks([name])
    repo = suite.prepare_repo(task, tmp_path / "repo")
    cmd = [sys.executable, "-m", "agentloop", "fix", task.description, "--check", task.check, "--json",
           "--model", MODEL, "--api-base", API_BASE, "--max-turns", "4", "--time-limit", str(TIME_LIMIT),
           *[a for f in task.files for a in ("--file", f)]]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=TIME_LIMIT + 60)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["outcome"] in ("accepted", "gave_up", "budget_exhausted")
    assert summary["duration_s"] <= TIME_LIMIT + 30
    events = list(read_events(Path(summary["trajectory"])))
    assert events[0]["type"] == "header" and events[-1]["type"] == "outcome"
    for event in events:
        assert validate_event(event) == [], event["type"]
    solved, _ = suite.run_check(task, repo)
    assert solved == (summary["outcome"] == "accepted")
    print(f"{name}: {summary['outcome']} in {summary['turns']} turns, {summary['duration_s']:.0f}s, "
          f"edits {summary['replies_with_edits']}/{summary['replies']}, {summary['tokens']} tokens")
    if name == "wrong_operator":
        assert solved, "the one-character bug was not fixed"
