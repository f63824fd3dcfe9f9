"""`agentloop runs`: list recorded runs, newest first. Reads only each run's summary.json."""

from __future__ import annotations

import json

import click

from agentloop.commands.style import outcome_style, runs_dir_option
from agentloop.outcome import Outcome


@click.command("runs")
@runs_dir_option
@click.option("--outcome", type=click.Choice([o.value for o in Outcome]), help="Only runs with this outcome.")
@click.option("--task", "task_text", metavar="TEXT", help="Only runs whose task contains TEXT (case-insensitive).")
@click.option("--min-reward", type=float, help="Only runs with at least this reward.")
@click.option("-n", "--limit", type=click.IntRange(min=1), help="Show at most N runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run (the run's summary) on stdout.")
@click.option("--prune", is_flag=True, help="Remove old run folders and their agentloop/<id> branches, keeping "
              "the newest --keep runs, any run in progress, and any applied to your tree and not undone.")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="With --prune: how many newest runs to keep (default: keep_runs in .agentloop.yaml, 20).")
@click.option("--dry-run", is_flag=True, help="With --prune: say what would be removed; remove nothing.")
def runs_command(runs_dir, outcome, task_text, min_reward, limit, as_json, prune, keep, dry_run):
    """List runs: id, start, outcome, turns, cost, duration, task.

    Exit codes: 0 (even when there are no runs), 2 outside a git repository without --runs-dir,
    or a filter value that is not a known outcome.
    """
    from pathlib import Path

    from agentloop.errors import UsageError
    from agentloop.record.runlog import default_runs_dir, list_runs

    folder = default_runs_dir(runs_dir)
    if folder is None:
        raise UsageError("not inside a git repository; pass --runs-dir DIR")
    if prune:
        _prune(Path(folder), keep, dry_run)
        return
    if keep is not None or dry_run:
        raise UsageError("--keep and --dry-run only make sense with --prune")
    rows = list_runs(Path(folder), outcome=outcome, task=task_text, min_reward=min_reward, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo(f"no runs in {folder}", err=True)
        return
    click.echo(f"{'RUN':<23} {'STARTED':<19} {'OUTCOME':<16} {'TURNS':>5} {'COST':>9} {'TIME':>7}  TASK")
    for row in rows:
        started = str(row.get("started") or "")[:19].replace("T", " ")
        outcome_text = outcome_style(str(row.get("outcome")), f"{row.get('outcome', ''):<16}")
        turns = "" if row.get("turns") is None else row["turns"]
        cost = "" if row.get("cost_usd") is None else f"${row['cost_usd']:.4f}"
        duration = "" if row.get("duration_s") is None else f"{row['duration_s']:.1f}s"
        task = " ".join(str(row.get("task") or "").split())
        if row.get("flags"):
            task = f"[FLAGGED {','.join(sorted(row['flags']))}] {task}"
        click.echo(f"{row.get('run_id', ''):<23} {started:<19} {outcome_text} {turns:>5} {cost:>9} {duration:>7}  "
                   f"{task[:100 if row.get('flags') else 60]}")


def _prune(folder, keep: int | None, dry_run: bool) -> None:
    from pathlib import Path

    from agentloop.config import load_config
    from agentloop.record.prune import prune_runs
    from agentloop.words import plural
    from agentloop.workspace.repo import find_repo_root

    repo = find_repo_root(Path.cwd())
    keep = load_config(repo).keep_runs if keep is None else keep
    report = prune_runs(repo, folder, keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {plural(len(report.removed), 'run')} and "
               f"{plural(report.branches_removed, 'branch', 'branches')}; kept the newest {keep}", err=True)
    if report.worktrees_removed:
        click.echo(f"removed {plural(report.worktrees_removed, 'idle worktree')} (.git/agentloop/pool; "
                   "the next run makes one again)", err=True)
    for why, names in (("applied to your tree and not undone", report.kept_applied),
                       ("in progress", report.kept_running),
                       ("its branch is checked out", report.kept_checked_out)):
        if names:
            click.echo(f"kept {plural(len(names), 'older run')} {why}: {', '.join(names[:5])}"
                       + (" ..." if len(names) > 5 else ""), err=True)
