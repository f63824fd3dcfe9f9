"""`agentloop replay RUN`: re-run the recorded replies in a fresh worktree and compare the verdicts."""

from __future__ import annotations

import json

import click

from agentloop.commands.style import RUN_ARG_SETTINGS, paint, runs_dir_option, use_colour
from agentloop.outcome import Outcome


@click.command("replay", context_settings=RUN_ARG_SETTINGS)
@click.argument("run")
@runs_dir_option
@click.option("-m", "--model", help="Send the recorded conversation prefix to this litellm model instead, "
              "for a fresh continuation.")
@click.option("--api-base", help="Base URL of an OpenAI-compatible server for --model.")
@click.option("--from-turn", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --model: recorded replies serve the turns before this one, the model continues.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
def replay_command(run, runs_dir, model, api_base, from_turn, as_json):
    """Re-execute RUN's recorded replies against a fresh git worktree at its base commit (under
    .agentloop/replay/, removed afterwards) and report whether every check verdict matches the record.

    RUN is a run id, a unique prefix of one, `last` or -1 (the newest run), -2, ..., or a run directory.
    Exit codes: 0 every verdict matches (with --model: the new run was accepted), 1 they differ
    (not accepted), 2 bad argument or the base commit is missing, 3 provider error.
    """
    from pathlib import Path

    from agentloop.errors import UsageError
    from agentloop.record.runlog import Run, default_runs_dir, find_run
    from agentloop.run.replay import replay_run
    from agentloop.workspace.repo import find_repo_root

    folder = default_runs_dir(runs_dir)
    loaded = Run.load(find_run(run, folder))
    repo = find_repo_root(Path.cwd())
    if folder is None:
        raise UsageError("no runs directory; pass --runs-dir DIR")
    live = None
    if model:
        from agentloop.run.session import build_model

        config = _live_config(loaded, model, api_base)
        live = build_model(config)
    elif api_base or from_turn != 1:
        raise UsageError("--api-base and --from-turn only make sense with --model")

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    report = replay_run(loaded, repo, Path(folder), live=live, from_turn=from_turn, progress=say)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        colour = use_colour()
        for v in report.verdicts:
            mark = paint("same" if v.matches else "DIFFERS", colour, fg="green" if v.matches else "red")
            click.echo(f"turn {v.turn:>2}  {_word(v.recorded):>8} -> {_word(v.replayed):<8}  {mark}  {v.check}")
        click.echo(f"outcome: recorded {report.recorded_outcome}, replayed {report.replayed_outcome} "
                   f"(run {report.replay_run_id})")
        verdict = "every check verdict matches the record" if report.matches else "the replay differs from the record"
        click.echo(paint(verdict, colour, fg="green" if report.matches else "red", bold=True))
    if live is not None:
        raise SystemExit(0 if report.replayed_outcome == Outcome.ACCEPTED else 1)
    raise SystemExit(0 if report.matches else 1)


def _word(passed: bool | None) -> str:
    return "-" if passed is None else "pass" if passed else "fail"


def _live_config(run, model: str, api_base: str | None):
    from dataclasses import replace

    from agentloop.config import Config, apply_mapping

    recorded = run.header.get("config") or {}
    base = apply_mapping(Config(), {k: recorded[k] for k in ("model_params", "retries", "retry_max_wait",
                                                             "request_timeout") if k in recorded}, "recorded config")
    return replace(base, model=model, api_base=api_base)
