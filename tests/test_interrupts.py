"""Ctrl-C, SIGTERM and SIGKILL at random moments of a real `agentloop fix` subprocess: the user's tree is as
before or holds the whole result, git stays consistent, nothing is left behind (see interrupt_scenarios.py).

A handful of scenarios by default; AGENTLOOP_KILL_SCENARIOS=200 (or benchmarks/bench_interrupts.py) runs more."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from interrupt_scenarios import run_many, run_once

from agentloop.workspace.isolation import state_dir


def test_random_kills_never_lose_anything(tmp_path):
    count = int(os.environ.get("AGENTLOOP_KILL_SCENARIOS") or 3)
    report = run_many(tmp_path, count, seed=int(os.environ.get("AGENTLOOP_KILL_SEED") or 1), progress=print)
    print({k: v for k, v in report.items() if k != "failures"})
    assert report["lost"] == 0, report["failures"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_while_the_result_is_written_back(tmp_path, sig):
    """SIGINT/SIGTERM while the accepted result is renamed into place are only noted: the write completes.
    A SIGKILL there leaves a journal; the next run finishes the renames."""
    def applying(repo):
        return any('"committing"' in p.read_text() for p in state_dir(repo).glob("journal-*.json"))

    result = run_once(tmp_path / "s", random.Random(3), sig, 0, False, apply_delay=0.5, kill_when=applying)
    assert result["survived"], result["problems"]
    assert result["tree"] == "whole result"
    if sig == signal.SIGKILL:
        assert result["how"] == "journal repaired by the next run"
    else:
        assert result["exit_code"] == 0 and result["outcome"] == "accepted"


def test_ctrl_c_while_the_cli_is_still_importing_ends_with_130_and_one_line(tmp_path):
    """Before agentloop.cli is imported (click and the rest: a tenth of a second or more), Ctrl-C
    must not print a traceback. A `click` that announces itself and then hangs holds the import
    there, so the interrupt lands inside it every time."""
    import subprocess
    import sys
    import time

    shim = tmp_path / "shim"
    shim.mkdir()
    marker = tmp_path / "importing"
    (shim / "click.py").write_text(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(Path(__file__).resolve().parents[1])])}
    proc = subprocess.Popen([sys.executable, "-m", "agentloop", "runs"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.decode() == "agentloop: interrupted\n" and out == b""
