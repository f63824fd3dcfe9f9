"""`agentloop batch TASKS -o OUT`: run every (task, sample) of a task file, resumably."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("batch")
@click.argument("tasks", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder: results.jsonl, manifest.json, rollouts/<id>/<k>/.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rollouts run at once.")
@click.option("--samples", type=click.IntRange(min=1), help="Rollouts per task (overrides the rows' samples).")
@click.option("-m", "--model", help="litellm model string, e.g. openai/<name> [env AGENTLOOP_MODEL].")
@click.option("--api-base", help="Base URL of an OpenAI-compatible server [env AGENTLOOP_API_BASE].")
@click.option("--filter", "pattern", metavar="REGEX", help="Only tasks whose id matches REGEX (re.search).")
@click.option("--slice", "slice_text", metavar="A:B", help="Only rows A to B-1 (after --filter), e.g. 0:100.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: rollouts forked from one warm worker process; ray: a pool of -w Ray actors, "
                   "one call per rollout (pip install 'agentloop[ray]').")
@click.option("--ray-address", metavar="ADDR",
              help="Ray cluster to join (`auto` for the local one); default: start one.")
@click.option("--ray-cpus", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="CPUs Ray reserves for each actor, one rollout at a time (--backend ray).")
@click.option("--redo-existing", is_flag=True,
              help="Run everything again even if OUT holds results (earlier results.jsonl kept as results.N.jsonl).")
@click.option("--sandbox", type=click.Choice(["bwrap", "off"]), default="bwrap", show_default=True,
              help="Run checks under bubblewrap; a batch refuses to run unsandboxed unless this is off.")
@click.option("--rollout-timeout", type=click.FloatRange(min=1),
              help="Default seconds for the agent's turns (rows' limits win).")
@click.option("--verify-timeout", type=click.FloatRange(min=1), help="Default seconds for the hidden checks.")
@click.option("--max-turns", type=click.IntRange(min=1), help="Default most turns per rollout (rows' limits win).")
@click.option("--kill-grace", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds past rollout + verify timeout before a rollout's process group is killed.")
def batch_command(tasks, out, workers, samples, model, api_base, pattern, slice_text, backend, ray_address,
                  ray_cpus, redo_existing, sandbox, rollout_timeout, verify_timeout, max_turns, kill_grace):
    """Run every (task, sample) of a task file; rerunning resumes.

    Writes OUT/results.jsonl (one line per finished rollout: status passed, failed, timeout,
    agent_error or infra_error, reward, turns, tokens, cost, seconds, run dir) and each rollout's
    record to OUT/rollouts/<id>/<k>/. Exit codes: 0 done, 2 usage error (bad task file, settings that
    differ from OUT's), 130 interrupted (nothing half-written; rerun to resume).
    """
    import os

    from agentloop.batch.driver import Settings, run_batch
    from agentloop.errors import UsageError

    model = model or os.environ.get("AGENTLOOP_MODEL")
    api_base = api_base or os.environ.get("AGENTLOOP_API_BASE")
    if not model:
        raise UsageError("no model; pass --model MODEL or set AGENTLOOP_MODEL (for a local server also --api-base URL)")
    defaults = {k: v for k, v in {"rollout_timeout": rollout_timeout, "verify_timeout": verify_timeout,
                                  "max_turns": max_turns}.items() if v is not None}
    settings = Settings(model=model, api_base=api_base, sandbox=sandbox, workers=workers, samples=samples,
                        filter=pattern, slice=slice_text, defaults=defaults, grace=kill_grace)
    if backend == "ray":
        from agentloop.batch.ray_backend import import_ray

        import_ray()  # not installed: one line, before anything is written
    run_batch(tasks, out, settings, redo=redo_existing, backend=backend, ray_address=ray_address,
              ray_cpus=ray_cpus)
