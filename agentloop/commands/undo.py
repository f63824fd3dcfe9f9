"""`agentloop undo RUN_ID`: put the files a run changed back as they were before it, byte for byte."""

from __future__ import annotations

import click

from agentloop.commands.style import runs_dir_option


@click.command("undo")
@click.argument("run_id")
@runs_dir_option
@click.option("--force", is_flag=True, help="Restore even files that changed after the run ended.")
def undo_command(run_id, runs_dir, force):
    """Undo what run RUN_ID did to the working tree (an --in-place run, or a result applied back).

    Refuses, with exit code 1, when those files changed since the run ended, unless --force.
    """
    from pathlib import Path

    from agentloop.errors import UsageError
    from agentloop.isolation import undo
    from agentloop.runlog import default_runs_dir

    folder = default_runs_dir(runs_dir)
    if folder is None:
        raise UsageError("not inside a git repository; pass --runs-dir DIR")
    run_dir = Path(folder) / run_id
    if not run_id or "/" in run_id or not run_dir.is_dir():
        raise UsageError(f"no run {run_id!r} in {folder}; `agentloop runs` lists them")
    restored = undo(run_dir, force=force)
    if restored:
        click.echo(f"restored {len(restored)} file(s) as they were before run {run_id}: "
                   + ", ".join(restored[:5]) + (" ..." if len(restored) > 5 else ""), err=True)
    else:
        click.echo(f"run {run_id} left nothing in the working tree to undo", err=True)
