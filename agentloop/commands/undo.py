"""`agentloop undo RUN`: put the files a run changed back as they were before it, byte for byte."""

from __future__ import annotations

import click

from agentloop.commands.style import RUN_ARG_SETTINGS, runs_dir_option


@click.command("undo", context_settings=RUN_ARG_SETTINGS)
@click.argument("run_id", metavar="RUN")
@runs_dir_option
@click.option("--force", is_flag=True, help="Restore even files that changed after the run ended.")
def undo_command(run_id, runs_dir, force):
    """Undo what run RUN did to the working tree (an --in-place run, or a result applied back).

    RUN is a run id, a unique prefix of one, `last` or -1 (the newest run), -2 (the one before), ...
    Exit codes: 0 restored (or nothing left to undo, or already undone), 1 refused because those
    files changed since the run ended (pass --force), 2 unknown run or not in a repository.
    """
    from agentloop.errors import UsageError
    from agentloop.record.runlog import default_runs_dir, find_run
    from agentloop.workspace.isolation import WORKSPACE_FILE, read_json, undo

    folder = default_runs_dir(runs_dir)
    if folder is None:
        raise UsageError("not inside a git repository; pass --runs-dir DIR")
    run_dir = find_run(run_id, folder)
    name = run_dir.name
    if (read_json(run_dir / WORKSPACE_FILE) or {}).get("undone"):
        click.echo(f"run {name} was already undone; nothing to do", err=True)
        return
    restored = undo(run_dir, force=force)
    if restored:
        click.echo(f"restored {len(restored)} file(s) as they were before run {name}: "
                   + ", ".join(restored[:5]) + (" ..." if len(restored) > 5 else ""), err=True)
    else:
        click.echo(f"run {name} left nothing in the working tree to undo", err=True)
