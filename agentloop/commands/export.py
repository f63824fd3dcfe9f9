"""`agentloop export`: recorded runs -> training data (JSONL) in a trainer's own format."""

from __future__ import annotations

from pathlib import Path

import click

from agentloop.commands.style import RUN_ARG_SETTINGS, runs_dir_option
from agentloop.outcome import Outcome

FORMAT_NAMES = ["openai-sft", "openai-dpo", "trl-sft", "trl-dpo", "atif", "rlef"]


@click.command("export", context_settings=RUN_ARG_SETTINGS)
@click.argument("runs", nargs=-1, required=True, metavar="RUN_OR_DIR...")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), required=True, help="Output format.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True, metavar="FILE",
              help="The JSONL file to write (replaced whole, never half-written).")
@runs_dir_option
@click.option("--outcome", type=click.Choice([o.value for o in Outcome]), help="Only runs with this outcome.")
@click.option("--min-reward", type=float, help="Only runs with at least this reward.")
@click.option("--task", "task_text", metavar="TEXT", help="Only runs whose task contains TEXT (case-insensitive).")
@click.option("--exclude-flagged", is_flag=True, help="Leave out runs with suspicious-edit or tampering flags.")
def export_command(runs, fmt, out_path, runs_dir, outcome, min_reward, task_text, exclude_flagged):
    """Export runs as training data (SFT, DPO, ATIF, RLEF) in FORMAT.

    RUN_OR_DIR... are run ids or prefixes, `last`, -1, -2, ..., run directories, or directories of
    runs.

    Filters apply before pairing: DPO formats pair an accepted run with a run of the same task (same
    task text, starting tree content and checks) that failed on the merits, never an interrupted or
    error run, never two identical outputs; a flagged run is never the chosen one. Every row carries
    the `flags` of its run(s); a flagged run's reward is never positive. Exit code 0, or 2 on a bad
    argument.
    """
    import json

    from agentloop.errors import UsageError
    from agentloop.files import atomic_write
    from agentloop.record.exporters import FORMATS
    from agentloop.record.runlog import Run, default_runs_dir, expand_runs
    from agentloop.words import plural

    folder = default_runs_dir(runs_dir)
    selected = []
    for run_dir in expand_runs(list(runs), folder):
        run = Run.load(run_dir)
        if outcome and run.outcome != outcome:
            continue
        if min_reward is not None and (run.export_reward is None or run.export_reward < min_reward):
            continue
        if exclude_flagged and run.flags:
            continue
        if task_text and task_text.lower() not in run.task.lower():
            continue
        selected.append(run)
    rows = [json.dumps(row, ensure_ascii=False) for row in FORMATS[fmt](selected)]
    try:
        atomic_write(out_path, "".join(line + "\n" for line in rows))
    except OSError as exc:
        raise UsageError(f"--out {out_path}: cannot write it ({exc.strerror}); check the folder exists") from None
    click.echo(f"wrote {plural(len(rows), 'row')} ({fmt}) from {plural(len(selected), 'run')} to {out_path}", err=True)
