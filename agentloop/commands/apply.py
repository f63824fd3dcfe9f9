"""`agentloop apply`: apply a model reply (any edit format) to the repository in the current directory.

Exit 0 applied (prints the files changed), 1 refused (prints why, nothing changed), 2 usage error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from agentloop.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def _fail(message: str, code: int) -> None:
    click.echo(f"agentloop apply: {message}", err=True)
    sys.exit(code)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        from agentloop.workspace.gitsafe import git_argv, git_env

        out = subprocess.run(git_argv(*args), cwd=cwd, env=git_env(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _read_reply(source: str | None) -> str:
    if source is None and sys.stdin.isatty():
        _fail("no reply to apply: give a FILE, or pipe the reply in (e.g. `pbpaste | agentloop apply`); "
              "`agentloop apply -` reads what you type until Ctrl-D", EXIT_USAGE)
    try:
        if source in (None, "-"):
            if sys.stdin.isatty():
                click.echo("reading the reply from standard input; end it with Ctrl-D", err=True)
            data = sys.stdin.buffer.read()
        else:
            data = Path(source).read_bytes()
    except OSError as exc:
        _fail(f"cannot read {source}: {exc.strerror or exc}", EXIT_USAGE)
    return data.decode("utf-8", errors="replace")


def _apply(source: str | None, dry_run: bool, as_json: bool) -> None:
    from agentloop.edits import apply_reply, render_failures  # imported here: keeps `agentloop --help` fast
    from agentloop.workspace.gitsafe import toplevel

    root = toplevel(Path.cwd())
    if root is None:
        _fail("not inside a git repository", EXIT_USAGE)
    reply = _read_reply(source)
    tracked = (_git(["ls-files", "-z"], root) or "").split("\0")
    try:
        result = apply_reply(root, reply, known_files=[t for t in tracked if t], dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback
        _fail(f"internal error while applying: {type(exc).__name__}: {exc}", EXIT_FAILED)
    ok = result.applied and not result.failures
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif not result.edits:
        click.echo("No edits found in the reply (SEARCH/REPLACE blocks, diffs, apply_patch, or whole files).")
    elif ok:
        verb = "Would change" if dry_run else "Changed"
        click.echo(f"{verb} {len(result.changed_files)} file(s):")
        for rel in result.changed_files:
            click.echo(f"  {rel}")
        for note in result.notes:
            click.echo(f"note: {note}")
    else:
        click.echo(_for_people(render_failures(result), dry_run))
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


def _for_people(text: str, dry_run: bool) -> str:
    """render_failures speaks to the model ("send all the edits again"); say the same to a person."""
    head, _, rest = text.partition("\n")
    count = head.split(" could not be applied")[0]
    nothing = "nothing would change" if dry_run else "nothing was changed"
    first = f"{nothing}: {count} could not be applied (a reply applies all or nothing)"
    return "\n".join([first, rest]) if rest else first


@click.argument("reply_file", metavar="[FILE|-]", required=False)
@click.option("--dry-run", is_flag=True, help="Check that the reply applies; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def _apply_command(reply_file: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply a model reply (SEARCH/REPLACE, diff, apply_patch, whole files) to this repository.

    Reads FILE, or standard input (`-`, the default when input is piped; on a terminal with no FILE
    it stops with a usage error rather than wait). All edits apply or none do.
    Exit status: 0 applied, 1 refused (nothing changed), 2 usage error.
    """
    _apply(reply_file, dry_run, as_json)


apply_command = click.command("apply")(_apply_command)
