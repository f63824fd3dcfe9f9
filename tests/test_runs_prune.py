"""`agentloop runs --prune`: old run folders and branches go; running and applied runs stay."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTEST, git
from fake_llm import FakeLLM

from agentloop.cli import cli

FIX_ADD = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
HARMLESS = "calc.py\n<<<<<<< SEARCH\n    return a * b\n=======\n    return b * a\n>>>>>>> REPLACE\n"
FAILS = "python3 -c 'raise SystemExit(1)'"


def fix(repo: Path, reply: str, *checks: str) -> str:
    with FakeLLM([{"content": reply}]) as server:
        args = ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--max-turns", "1"]
        for check in checks:
            args += ["--check", check]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.stderr.rsplit("run ", 1)[1].split(":")[0]


def branches(repo: Path) -> set[str]:
    return set(git(repo, "branch", "--format=%(refname:short)").split())


def test_prune_keeps_the_newest_running_and_applied_runs(calc_repo, monkeypatch):
    monkeypatch.chdir(calc_repo)
    runs = calc_repo / ".agentloop" / "runs"
    applied = fix(calc_repo, FIX_ADD, PYTEST)
    old = [fix(calc_repo, HARMLESS, FAILS) for _ in range(2)]
    newest = fix(calc_repo, HARMLESS, FAILS)
    assert {f"agentloop/{r}" for r in [applied, *old, newest]} <= branches(calc_repo)
    starting = runs / "00000000-000000-aaaaaa"  # older by name, but its process is still writing
    starting.mkdir()
    (starting / "trajectory.jsonl").write_text('{"type": "header"}\n')
    crashed = runs / "00000000-000000-bbbbbb"  # never finished, untouched for an hour
    crashed.mkdir()
    (crashed / "trajectory.jsonl").write_text('{"type": "header"}\n')
    os.utime(crashed / "trajectory.jsonl", (1, 1))

    dry = CliRunner().invoke(cli, ["runs", "--prune", "--keep", "1", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 3 runs and 2 branches" in dry.stderr
    assert (runs / old[0]).is_dir()

    result = CliRunner().invoke(cli, ["runs", "--prune", "--keep", "1"])
    assert result.exit_code == 0, result.stderr
    assert "removed 3 runs and 2 branches; kept the newest 1" in result.stderr
    assert f"applied to your tree and not undone: {applied}" in result.stderr
    assert "in progress: 00000000-000000-aaaaaa" in result.stderr
    left = {p.name for p in runs.iterdir() if p.is_dir()}
    assert left == {newest, applied, starting.name}
    assert f"agentloop/{old[0]}" not in branches(calc_repo) and f"agentloop/{newest}" in branches(calc_repo)
    assert "return a + b" in (calc_repo / "calc.py").read_text()  # the applied result is untouched
    assert "removed 1 idle worktree" in result.stderr  # the runs' pooled worktree, held by none
    assert git(calc_repo, "worktree", "list", "--porcelain").count("worktree ") == 1

    # Once undone, the applied run is an old run like any other; keep_runs sets the default.
    assert CliRunner().invoke(cli, ["undo", applied]).exit_code == 0
    (calc_repo / ".agentloop.yaml").write_text("keep_runs: 1\n")
    again = CliRunner().invoke(cli, ["runs", "--prune"])
    assert again.exit_code == 0 and "removed 1 run and 1 branch; kept the newest 1" in again.stderr
    assert not (runs / applied).exists()


def test_prune_flags_need_prune(calc_repo, monkeypatch):
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["runs", "--keep", "3"])
    assert result.exit_code == 2 and "only make sense with --prune" in result.stderr


def test_run_ids_of_one_second_sort_in_start_order():
    """"Newest" is decided by name: ids made within one second must still sort in the order made."""
    import time

    from agentloop.record.trajectory import new_run_id

    ids = []
    for _ in range(20):
        ids.append(new_run_id())
        time.sleep(0.002)
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert all(len(i.rsplit("-", 1)[1]) == 6 for i in ids)
