"""`agentloop hook`: the pre-commit hook. Instant when the checks pass; a repair when they do not.

The pass path imports only config, checks and click: no litellm, no trajectory, no network.
Fixes are left in the working tree, unstaged, and the hook exits 1 (pre-commit's rule for a hook
that changed files), so the person reviews and stages them. It never commits, stages or stashes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path

import click

from agentloop.outcome import Outcome

FILES = "{files}"
# The hook's budget unless `hook:` in .agentloop.yaml or a flag says otherwise: a commit is no place to wait long.
HOOK_BUDGET = {"max_turns": 3, "max_cost": 0.5, "time_limit": 300}
MODEL_LINE = ("agentloop: to have failing checks repaired, set a model: add 'model: gpt-4.1-mini' to .agentloop.yaml "
              "(or export AGENTLOOP_MODEL=...; a local server also needs AGENTLOOP_API_BASE)")


@click.command("hook")
@click.argument("checks", nargs=-1, metavar="[CHECK]...")
@click.option("-m", "--model", help="litellm model string [env AGENTLOOP_MODEL].")
@click.option("--api-base", help="Base URL of an OpenAI-compatible server [env AGENTLOOP_API_BASE].")
@click.option("--max-turns", type=click.IntRange(min=1), help=f"Most turns (default {HOOK_BUDGET['max_turns']}).")
@click.option("--max-cost", type=click.FloatRange(min=0), help=f"Most USD (default {HOOK_BUDGET['max_cost']}).")
@click.option("--time-limit", type=click.FloatRange(min=1),
              help=f"Most seconds of wall time (default {HOOK_BUDGET['time_limit']}).")
@click.option("--task", help="What to ask the model (default: \"Make the checks pass.\").")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (default: .agentloop.yaml at the repository root).")
@click.option("--allow-test-edits", "allow_test_edits", is_flag=True, default=None,
              help="Let the model edit tests and the harness, protected by default [config allow_test_edits].")
def hook_command(checks, model, api_base, max_turns, max_cost, time_limit, task, config_path, allow_test_edits):
    """Run the checks; when they fail and a model is set, repair the code in place.

    Made for pre-commit (see .pre-commit-hooks.yaml). Each CHECK is a shell command; without
    any, `hook: checks` then `checks` from .agentloop.yaml are used. `{files}` in a check becomes
    the staged files, shell-quoted; with no staged files such a check is skipped. Exit codes:
    0 all checks pass, 1 they failed (fixed or not: review `git diff`, then stage), 2 usage error,
    3 provider error (the checks failed and the model could not be reached; files as they were),
    130 interrupted.
    """
    import time

    started = time.monotonic()  # the time limit counts from here, the first round of checks included
    from agentloop.config import Check, load_config
    from agentloop.errors import UsageError

    repo = repo_root()
    restore_user_path(os.environ)
    config = load_config(repo, config_path=config_path,
                         flags={"model": model, "api_base": api_base, "in_place": True,
                                "allow_test_edits": allow_test_edits})
    if checks:
        wanted = tuple(Check(run=c) for c in checks)
    else:
        wanted = config.hook.checks or config.checks
    if not wanted:
        raise UsageError("no checks to run; give them as the hook's args (args: [\"python -m pytest -q\"]) "
                         "or under checks: in .agentloop.yaml")
    wanted = expand_files(wanted, repo)
    budget = {**HOOK_BUDGET, **config.hook.budget()}
    budget.update({k: v for k, v in (("max_turns", max_turns), ("max_cost", max_cost), ("time_limit", time_limit))
                   if v is not None})
    config = replace(config, checks=tuple(c for c in wanted if c is not None),
                     budget=replace(config.budget, **budget))
    for check in wanted:
        if check is None:
            click.echo("agentloop: a check on {files} was skipped: no staged files")
    if not config.checks:
        raise SystemExit(0)

    results = run_checks(config, repo)
    failed = failures(config, results)
    if not failed:
        click.echo(f"agentloop: {len(config.checks)} check(s) pass")
        raise SystemExit(0)
    if not config.model:
        for result in failed:
            _show_failure(result)
        click.echo(MODEL_LINE)
        raise SystemExit(1)
    raise SystemExit(repair(config, repo, task, results, started))


def repo_root() -> Path:
    """The repository's top folder. Not workspace.find_repo_root: importing the workspace module
    (tempfile, shutil, ...) would cost the pass path time for nothing."""
    from agentloop.workspace.gitsafe import toplevel

    root = toplevel()
    if root is None:
        from agentloop.errors import UsageError

        raise UsageError(f"{Path.cwd()}: not inside a git repository; run the hook from a git repo")
    return root


def restore_user_path(environ: MutableMapping[str, str], prefix: str | None = None) -> bool:
    """Under pre-commit, make `python` and `pytest` in a check resolve as in the user's own shell.

    pre-commit runs the hook from its own virtualenv (`.../py_env-*`): it puts that venv's bin
    first on PATH and sets VIRTUAL_ENV to it. Checks must not see that venv, so both are undone;
    the user's own venv, if their shell had one active, is the next on PATH and becomes
    VIRTUAL_ENV again. Returns whether anything changed.
    """
    prefix = prefix or sys.prefix
    venv = Path(prefix)
    if not venv.name.startswith("py_env-") or not (venv / "pyvenv.cfg").is_file():
        return False  # not a pre-commit hook environment: the user's environment already
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    entries = environ.get("PATH", "").split(os.pathsep)
    kept = [p for p in entries if not p or not _same(p, bin_dir)]
    virtual_env = environ.get("VIRTUAL_ENV")
    if kept == entries and not (virtual_env and _same(virtual_env, venv)):
        return False
    environ["PATH"] = os.pathsep.join(kept)
    if virtual_env and _same(virtual_env, venv):
        del environ["VIRTUAL_ENV"]
        for entry in kept:  # the first python on PATH: if it lives in a venv, that is the user's
            if entry and (Path(entry) / "python").exists():
                if (Path(entry).parent / "pyvenv.cfg").is_file():
                    environ["VIRTUAL_ENV"] = str(Path(entry).parent)
                break
    return True


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def staged_files(repo: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """Files added, copied, modified or renamed in the index (the commit being made)."""
    from agentloop.workspace.gitsafe import git_argv, git_env

    proc = subprocess.run(git_argv("diff", "--cached", "--name-only", "--diff-filter=ACMR", "-z"), cwd=repo,
                          capture_output=True, env=git_env(environ))
    if proc.returncode != 0:
        return []
    return [f for f in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if f]


def expand_files(checks, repo: Path) -> list:
    """Replace `{files}` with the staged files, shell-quoted; None stands for a check skipped for want of any."""
    if not any(FILES in c.run for c in checks):
        return list(checks)
    quoted = " ".join(shlex.quote(f) for f in staged_files(repo))
    return [c if FILES not in c.run else
            (replace(c, run=c.run.replace(FILES, quoted), name=c.name or c.run) if quoted else None)
            for c in checks]


def run_checks(config, repo: Path) -> list:
    """The checks in the loop's order (agentloop.workspace.checks.run_suite), so a repair can start
    from these results; no trajectory, no model."""
    from agentloop.workspace import grading
    from agentloop.workspace.checks import check_env, run_command, run_suite

    env = check_env(config.pass_env)

    def run_one(check, number: int, count: int):
        # A pytest check runs graded so that a repair knows which tests ran at the start; the verdict
        # here stays the exit code (the user's own commit: no model-written code has run yet).
        graded = grading.prepare(check.run, check.kind, env)
        result = run_command(graded.command if graded else check.run, repo,
                             timeout=check.timeout or config.check_timeout, output_cap=config.output_cap,
                             env=graded.env if graded else env)
        result.command = check.run
        if graded is not None:
            result.report = graded.read()
        return result

    return run_suite(config.checks, run_one)


def failures(config, results: list) -> list:
    """The results that keep the commit out: acceptance checks that did not pass."""
    accept = {c.run for c in config.checks if c.accept}
    return [r for r in results if r.command in accept and not r.passed]


def _show_failure(result) -> None:
    what = "timed out" if result.timed_out else f"exit {result.exit_code}"
    click.echo(f"agentloop: check failed ({what}): {result.command}")
    if result.output.strip():
        click.echo(result.output.rstrip("\n"))


def repair(config, repo: Path, task: str | None, results: list, started: float | None = None) -> int:
    """Run the loop in place, from the check results just seen. A fix stays in the working tree,
    unstaged; a failed attempt is undone."""
    from agentloop.record.ci import append_step_summary
    from agentloop.run.session import run_session
    from agentloop.workspace.repo import Workspace

    failed = failures(config, results)
    click.echo(f"agentloop: {len(failed)} check(s) failed ({', '.join(r.command for r in failed)}); "
               f"asking {config.model}, at most {config.budget.max_turns} turn(s)")
    replies: list[str] = []
    session = run_session(config, Workspace(repo), task, progress=lambda line: click.echo(f"agentloop: {line}"),
                          show_reply=replies.append, first_results=results, started=started)
    s, diff = session.summary, session.result.diff
    patch = Path(s["patch"]).read_text(encoding="utf-8")  # redacted: what is shown and reported
    spent = f"{s['turns']} turn(s), {s['tokens']} tokens, ${s['cost_usd']:.4f}"
    if s["outcome"] == Outcome.ACCEPTED and diff.strip():
        click.echo(f"agentloop: fixed after {spent}: the checks pass now")
        why = explanation(replies[-1]) if replies else ""
        if why:
            click.echo(f"why: {why}")
        click.echo("changed (NOT staged: review with `git diff`, then `git add` and commit again):")
        for path, added, removed in diff_stat(diff):
            click.echo(f"  {path} (+{added} -{removed})")
        click.echo(patch.rstrip("\n"))
        click.echo(f"agentloop: the same patch is saved in {s['patch']} (`git apply` it if the tree was reset)")
        code = 1
    elif s["outcome"] == Outcome.ACCEPTED:
        click.echo("agentloop: the checks passed when run again with no change: is one of them flaky?")
        code = 1
    else:
        undone = undo(repo, diff)
        click.echo(f"agentloop: not fixed ({s['reason']}) after {spent}")
        for result in session.result.checks:
            if not result.passed:
                _show_failure(result)
        if diff.strip():
            click.echo(f"agentloop: the attempt is saved in {s['patch']}; " + (
                "your files are as they were" if undone else "it could not be undone: check `git diff`"))
        code = session.exit_code or 1
    try:
        append_step_summary(s, patch, title="agentloop hook")
    except OSError:
        pass  # a CI nicety only
    click.echo(f"agentloop: run {s['run_id']}: {s['trajectory']}")
    return code


def undo(repo: Path, diff: str) -> bool:
    """Take a failed attempt's edits back out of the working tree (the index is never touched)."""
    if not diff.strip():
        return True
    from agentloop.workspace.gitsafe import git_argv, git_env

    proc = subprocess.run(git_argv("apply", "-R", "--binary", "--whitespace=nowarn", "-"), cwd=repo, env=git_env(),
                          input=diff.encode("utf-8", "surrogateescape"), capture_output=True)
    return proc.returncode == 0


def explanation(reply: str, limit: int = 400) -> str:
    """The prose a reply opens with, before its first edit block: the model's own 'why'."""
    lines: list[str] = []
    for line in reply.splitlines():
        if line.strip().startswith(("```", "<<<<<<<", "*** Begin Patch", "--- ", "diff --git")):
            break
        lines.append(line.strip())
    while lines and (not lines[-1] or (" " not in lines[-1] and "." in lines[-1])):
        lines.pop()  # blank lines and the file name that heads a SEARCH/REPLACE block
    text = " ".join(line for line in lines if line)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff_stat(diff: str) -> list[tuple[str, int, int]]:
    """(path, lines added, lines removed) per file of a git diff."""
    stats: list[list] = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            stats.append([line.split(" b/", 1)[-1], 0, 0])
        elif stats and line.startswith("+") and not line.startswith("+++ "):
            stats[-1][1] += 1
        elif stats and line.startswith("-") and not line.startswith("--- "):
            stats[-1][2] += 1
    return [tuple(s) for s in stats]
