"""`agentloop runs`: list recorded runs, newest first. Reads only each run's summary.json."""

from __future__ import annotations

import json

import click

from agentloop.commands.style import outcome_style, runs_dir_option


@click.command("runs")
@runs_dir_option
@click.option("--outcome", help="Only runs with this outcome (accepted, budget_exhausted, gave_up, error, "
              "interrupted, incomplete).")
@click.option("--task", "task_text", metavar="TEXT", help="Only runs whose task contains TEXT (case-insensitive).")
@click.option("--min-reward", type=float, help="Only runs with at least this reward.")
@click.option("-n", "--limit", type=click.IntRange(min=1), help="Show at most N runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run (the run's summary) on stdout.")
def runs_command(runs_dir, outcome, task_text, min_reward, limit, as_json):
    """List runs: id, start, outcome, turns, cost, duration, task. Exit code 0 (even when empty)."""
    from pathlib import Path

    from agentloop.errors import UsageError
    from agentloop.runlog import default_runs_dir, list_runs

    folder = default_runs_dir(runs_dir)
    if folder is None:
        raise UsageError("not inside a git repository; pass --runs-dir DIR")
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
