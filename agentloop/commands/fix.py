"""`agentloop fix`: repair the code until the checks pass or the budget runs out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from agentloop.config import EDIT_FORMATS, SANDBOX_MODES
from agentloop.outcome import Outcome


def outcome_line(s: dict) -> str:
    """`accepted: all acceptance checks pass; after 2 turns, 1874 tokens (first prompt 803), $0.0012, 4.0s`:
    the outcome, its reason said once, and what the run spent (the first prompt is what a slow local
    model keeps the user waiting on)."""
    from agentloop.words import plural

    outcome = Outcome.of(s["outcome"])
    word = outcome.words if outcome else s["outcome"]
    reason = " ".join(str(s.get("reason") or "").split())
    headline = reason if reason.startswith(word) or word in reason else f"{word}: {reason}" if reason else word
    turns, finished = s["turns"], s.get("turns_finished", s["turns"])
    if turns == 0:
        when = "(no turn needed)" if outcome == Outcome.ACCEPTED else "before the first turn"
    elif finished >= turns:
        when = f"after {plural(turns, 'turn')}"
    else:
        when = f"during turn {turns}"
    first = s.get("first_prompt_tokens") or s.get("first_prompt_estimate")
    first_note = f" (first prompt {first})" if first else ""
    return f"{headline}; {when}, {s['tokens']} tokens{first_note}, ${s['cost_usd']:.4f}, {s['duration_s']:.1f}s"


def closing_summary(s: dict) -> list[str]:
    """After the outcome: the files changed with +/- counts, where the result is, how to undo it."""
    from agentloop.commands.hook import diff_stat

    lines: list[str] = []
    try:
        patch = Path(s["patch"]).read_text(encoding="utf-8")
    except OSError:
        patch = ""
    stats = diff_stat(patch)
    if stats:
        lines.append("changed:")
        lines.extend(f"  {path} (+{added} -{removed})" for path, added, removed in stats)
    where = describe_result(s)
    if where:
        lines.append(where)
    w = s.get("workspace") or {}
    if stats and w.get("mode") == "worktree" and not w.get("applied"):
        lines.append(f"to take it: git apply {s['patch']}")
    return lines


@click.command("fix")
@click.argument("task", required=False)
@click.option("-m", "--model", help="litellm model string, e.g. gpt-4.1-mini or openai/<name> [env AGENTLOOP_MODEL].")
@click.option("--api-base", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
              "[env AGENTLOOP_API_BASE]. Local servers need no key.")
@click.option("--check", "checks", multiple=True, metavar="CMD",
              help="A check: its output is shown to the model and it must pass. Repeatable.")
@click.option("--accept", "accepts", multiple=True, metavar="CMD",
              help="A hidden acceptance check: must pass, output never shown to the model. Repeatable.")
@click.option("--accept-files", "accept_files", multiple=True, metavar="SRC[:DEST]",
              help="Held-out files: SRC (outside the repository) is laid in at DEST (default: its base name) only "
              "while --accept checks run; the model never sees it. Repeatable.")
@click.option("--file", "files", multiple=True, metavar="PATH", help="A file shown to the model up front. Repeatable.")
@click.option("--edit-format", type=click.Choice(EDIT_FORMATS),
              help="How the model writes edits (default: auto, chosen per model).")
@click.option("--max-turns", type=click.IntRange(min=1), help="Most turns (model reply + checks).")
@click.option("--max-cost", type=click.FloatRange(min=0), help="Most USD to spend on the model.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most prompt + completion tokens in all.")
@click.option("--time-limit", type=click.FloatRange(min=1), help="Most seconds of wall time.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (default: .agentloop.yaml at the repository root).")
@click.option("--sandbox", type=click.Choice(SANDBOX_MODES),
              help="Run checks under bubblewrap: auto (default) where it works, bwrap (required), or off "
              "[env AGENTLOOP_SANDBOX].")
@click.option("--allow-test-edits", "allow_test_edits", is_flag=True, default=None,
              help="Let the model edit tests and the harness (conftest.py, pytest/tox config, .gitignore, ...), "
              "protected by default [config allow_test_edits].")
@click.option("--runs-dir", help="Where runs are recorded (default: .agentloop/runs in the repository).")
@click.option("--in-place", "in_place", is_flag=True, default=None,
              help="Edit the working tree itself instead of a worktree of it (pre-commit, CI); "
              "`agentloop undo RUN_ID` restores it.")
@click.option("--include-untracked", "include_untracked", is_flag=True, default=None,
              help="Also show the model files git neither tracks nor has staged (hidden by default; "
              "config include_untracked).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout at the end.")
@click.option("--output-patch", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Write the final diff to FILE (empty when nothing changed), e.g. for a CI artifact.")
@click.option("-v", "--verbose", is_flag=True, help="Also print each model reply and the checks' output as they come.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and --json).")
def fix_command(task, model, api_base, checks, accepts, accept_files, files, edit_format, max_turns, max_cost,
                max_tokens, time_limit, config_path, sandbox, allow_test_edits, runs_dir, in_place, include_untracked,
                as_json, output_patch, verbose, quiet):
    """Ask the model for edits, run the checks, feed back, until they pass.

    TASK is what to do in words (default: "Make the checks pass."). Checks come from --check and
    --accept, or else from .agentloop.yaml. Exit codes: 0 accepted, 1 not fixed (budget exhausted
    or gave up), 2 usage error, 3 provider error, 130 interrupted. Never prompts; in GitHub
    Actions ($GITHUB_STEP_SUMMARY set) a short report is appended to the job summary.
    """
    import time

    started = time.monotonic()  # --time-limit counts from here: set-up, imports and checks included
    from agentloop.config import load_config
    from agentloop.errors import UsageError
    from agentloop.run.session import run_session
    from agentloop.workspace.repo import Workspace, find_repo_root

    repo = find_repo_root(Path.cwd())
    flags = {"model": model, "api_base": api_base, "files": files, "edit_format": edit_format,
             "max_turns": max_turns, "max_cost": max_cost, "max_tokens": max_tokens, "time_limit": time_limit,
             "runs_dir": runs_dir, "in_place": in_place, "sandbox": sandbox, "include_untracked": include_untracked,
             "allow_test_edits": allow_test_edits}
    if checks or accepts:
        flags["checks"] = [{"run": c} for c in checks] + [{"run": a, "feedback": False} for a in accepts]
    if accept_files:  # relative SRCs are relative to where the command was typed
        from agentloop.workspace.held_out import parse_spec

        specs = [parse_spec(spec) for spec in accept_files]
        flags["accept_files"] = [f"{Path(src).expanduser().resolve()}:{dest}" for src, dest in specs]
    config = load_config(repo, config_path=config_path, flags=flags)
    if config.accept_files:
        from agentloop.workspace.held_out import load

        if not any(not c.feedback for c in config.checks):
            raise UsageError("--accept-files needs a hidden check that runs them: add --accept CMD "
                             "(e.g. --accept 'python -m pytest -q tests/test_hidden.py')")
        load(config.accept_files, repo, ())  # SRC inside the repository, DEST outside it: exit 2 now
    if not config.checks:
        raise UsageError("no checks to run; pass --check 'python -m pytest -q' or add checks to "
                         ".agentloop.yaml (agentloop init writes one)")
    for path in config.files:
        if not (repo / path).is_file():
            raise UsageError(f"--file {path}: no such file in the repository; give a path relative to {repo}")
    from agentloop.workspace.sandbox import check_mode

    check_mode(config.sandbox)  # `bwrap` asked for but unusable: a usage error before the run starts
    if not config.model:  # said before a long suite runs, not after (the pre-commit hook differs: see hook.py)
        raise UsageError("no model is configured; pass --model MODEL or set AGENTLOOP_MODEL "
                         "(for a local server also --api-base URL)")
    if output_patch is not None and not output_patch.expanduser().parent.is_dir():
        raise UsageError(f"--output-patch {output_patch}: folder {output_patch.parent} does not exist; create it first")

    from agentloop.console import Console

    console = Console(verbose=verbose, quiet=quiet, live=False if as_json or quiet else None)
    say = console.line
    workspace = Workspace(repo)
    try:
        session = run_session(config, workspace, task, model=_model_or_usage_error(config),
                              progress=console.progress, show_reply=console.reply if verbose else None,
                              started=started, status=console.status,
                              check_output=console.check_output if verbose else None)
    finally:
        console.close()
    s = session.summary
    if verbose:
        say(f"trajectory: {s['trajectory']}")
    outcome = Outcome.of(s["outcome"])
    console.line(outcome_line(s), fg=outcome.colour if outcome else "red", bold=True)
    for note in s["cost_notes"]:
        say(f"note: {note}")
    for line in closing_summary(s):
        say(line)
    say(f"run {s['run_id']}: {s['trajectory']} (`agentloop show last` prints it)")
    _ci_outputs(s, output_patch, say)
    if as_json:
        click.echo(json.dumps(s))
    raise SystemExit(session.exit_code)


def describe_result(s: dict) -> str | None:
    """One line: where the result is, when it is not (only) in the user's tree."""
    w = s.get("workspace") or {}
    branch, patch = w.get("branch"), s["patch"]
    if not branch:
        return None
    if w.get("conflicts"):
        files = ", ".join(w["conflicts"][:3]) + (" ..." if len(w["conflicts"]) > 3 else "")
        return (f"your tree changed meanwhile ({files}): nothing was overwritten; the result is on branch "
                f"{branch} and in {patch}")
    if w.get("apply_error"):
        return f"not applied to your tree ({w['apply_error']}); the result is on branch {branch} and in {patch}"
    if w.get("restored"):
        return f"your tree is back as it was before the run; what it did is on branch {branch} and in {patch}"
    if w.get("mode") == "worktree" and s["changed"] and not w.get("applied"):
        return f"your tree is untouched; the result is on branch {branch} and in {patch}"
    if w.get("applied"):
        return (f"applied to your tree (review it with `git diff`); also on branch {branch} and in {patch}; "
                f"`agentloop undo {s['run_id']}` reverts it")
    return None


def _ci_outputs(summary: dict, output_patch: Path | None, say) -> None:
    """The patch file and the GitHub job summary, both from the recorded (redacted) final.patch."""
    from agentloop.record.ci import append_step_summary, write_patch

    diff = Path(summary["patch"]).read_text(encoding="utf-8")
    if output_patch is not None:
        write_patch(output_patch, diff)
        say(f"patch: {output_patch}")
    try:
        append_step_summary(summary, diff)
    except OSError as exc:
        say(f"note: could not append to $GITHUB_STEP_SUMMARY ({exc.strerror})")


def _model_or_usage_error(config):
    """None (the session builds the litellm model on first use); with no model configured, a model
    that stops the run with a usage error when it is needed."""
    if config.model:
        return None
    from agentloop.run.model import LazyModel

    def missing():
        from agentloop.errors import UsageError

        raise UsageError("the checks fail and no model is configured; pass --model MODEL or set "
                         "AGENTLOOP_MODEL (for a local server also --api-base URL)")

    return LazyModel("", missing)
