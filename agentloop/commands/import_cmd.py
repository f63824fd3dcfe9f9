"""`agentloop import`: task files from the formats people already have (SWE-bench instances)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("import")
def import_command() -> None:
    """Write a task file (for batch runs) from another format: agentloop import swebench FILE --repos DIR.

    Exit codes: 0 written, 2 bad input (nothing written).
    """


@import_command.command("swebench")
@click.argument("instances", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE")
@click.option("--repos", type=click.Path(path_type=Path, file_okay=False), required=True, metavar="DIR",
              help="Folder of local clones: DIR/owner__name, DIR/name or DIR/owner/name.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), metavar="OUT.jsonl",
              help="The task file to write (default: FILE's name with .tasks.jsonl, here). The held-out test "
                   "files go to the folder beside it: OUT.jsonl -> OUT.d.")
@click.option("--check", "checks", multiple=True, metavar="CMD",
              help="A visible check for every task (the model sees its output). Repeatable; default none.")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rollouts per task (the group size).")
def swebench_command(instances: Path, repos: Path, out: Path | None, checks: tuple[str, ...], samples: int) -> None:
    """Convert SWE-bench instances (JSON list or JSONL) to a task file.

    Each instance's test_patch becomes held-out files laid in only at grading; FAIL_TO_PASS and
    PASS_TO_PASS become the accept command (pytest). A bad instance gives one line (row, field,
    why) and nothing is written. Exit code 0, or 2 on bad input.
    """
    from agentloop.batch.swebench import heldout_dir, import_swebench

    out = out or Path(f"{instances.stem}.tasks.jsonl")
    count = import_swebench(instances, repos, out, checks=checks, samples=samples)
    click.echo(f"wrote {count} tasks to {out} (held-out test files in {heldout_dir(out)})", err=True)
