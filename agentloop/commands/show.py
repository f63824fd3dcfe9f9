"""`agentloop show RUN`: a readable transcript in the terminal, or one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from agentloop.commands.style import RUN_ARG_SETTINGS, paint, runs_dir_option, use_colour

STATUS_COLOURS = {"ok": "green", "fail": "red", "info": "cyan"}


@click.command("show", context_settings=RUN_ARG_SETTINGS)
@click.argument("run")
@runs_dir_option
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Write one self-contained HTML page of the run to FILE instead.")
@click.option("--full", is_flag=True, help="Do not fold long outputs.")
def show_command(run, runs_dir, html_path, full):
    """Print the transcript of RUN (a run id, a unique prefix of one, or a run directory):
    turns, replies, coloured diffs, check results, the outcome.

    RUN may also be `last` or -1 (the newest run), -2 (the one before), ...
    Exit code 0, or 2 if RUN is unknown."""
    from agentloop.record.runlog import Run, default_runs_dir, find_run
    from agentloop.record.transcript import blocks

    run_dir = find_run(run, default_runs_dir(runs_dir))
    loaded = Run.load(run_dir)
    if html_path is not None:
        from agentloop.errors import UsageError
        from agentloop.files import atomic_write
        from agentloop.record.html import render_html

        try:
            atomic_write(html_path, render_html(loaded))
        except OSError as exc:
            raise UsageError(f"--html {html_path}: cannot write it ({exc.strerror}); check the folder exists") from None
        click.echo(f"wrote {html_path}", err=True)
        return
    colour = use_colour()
    turn = 0
    for block in blocks(loaded):
        if block.turn and block.turn != turn:
            turn = block.turn
            click.echo(paint(f"\n##### turn {turn} #####", colour, bold=True), color=colour)
        click.echo(render_block(block, colour, full), color=colour)


def render_block(block, colour: bool, full: bool) -> str:
    from agentloop.record.transcript import fold

    rule = "=" if block.kind in ("header", "outcome") else "-"
    title = paint(f"{rule * 3} {block.title} ", colour, fg=STATUS_COLOURS[block.status], bold=True)
    lines = [title + (paint("[" + ", ".join(block.meta) + "]", colour, dim=True) if block.meta else "")]
    body = block.body
    if block.foldable and not full:
        body, _ = fold(body)
    if body:
        lines.extend(_diff_line(line, colour) if block.is_diff else "    " + line for line in body.splitlines())
    return "\n".join(lines)


def _diff_line(line: str, colour: bool) -> str:
    if line.startswith(("+++", "---")):
        return "    " + paint(line, colour, bold=True)
    if line.startswith("+"):
        return "    " + paint(line, colour, fg="green")
    if line.startswith("-"):
        return "    " + paint(line, colour, fg="red")
    if line.startswith("@@"):
        return "    " + paint(line, colour, fg="cyan")
    return "    " + line
