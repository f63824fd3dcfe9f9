"""The `agentloop` command line. Each command lives in `agentloop/commands/`; imports stay lazy
so that `agentloop --help` and a passing pre-commit run are instant."""

from __future__ import annotations

import click

from agentloop import __version__
from agentloop.errors import EXIT_INTERRUPTED, AgentloopError

# name -> (module:attribute, one-line help). A command's module is imported only when it runs, so
# `agentloop --help` and the pre-commit hook's pass path load nothing they do not use.
# tests/test_cli_lazy.py checks that each line matches the command's own docstring.
COMMANDS = {
    "fix": ("agentloop.commands.fix:fix_command",
            "Ask the model for edits, run the checks, feed back, until they pass."),
    "hook": ("agentloop.commands.hook:hook_command",
             "Run the checks; when they fail and a model is set, repair the code in place."),
    "apply": ("agentloop.commands.apply:apply_command",
              "Apply a model reply (SEARCH/REPLACE, diff, apply_patch, whole files) to this repository."),
    "init": ("agentloop.commands.init:init_command",
             "Write a commented .agentloop.yaml with the checks this repository shows."),
    "runs": ("agentloop.commands.runs:runs_command",
             "List runs: id, start, outcome, turns, cost, duration, task."),
    "show": ("agentloop.commands.show:show_command",
             "Print the transcript of RUN (a run id, a unique prefix of one, or a run directory): turns, "
             "replies, coloured diffs, check results, the outcome."),
    "replay": ("agentloop.commands.replay:replay_command",
               "Re-execute RUN's recorded replies against a fresh git worktree at its base commit (under "
               ".agentloop/replay/, removed afterwards) and report whether every check verdict matches the record."),
    "undo": ("agentloop.commands.undo:undo_command",
             "Undo what run RUN did to the working tree (an --in-place run, or a result applied back)."),
    "export": ("agentloop.commands.export:export_command",
               "Export runs as training data (SFT, DPO, ATIF, RLEF) in FORMAT."),
    "import": ("agentloop.commands.import_cmd:import_command",
               "Write a task file (for batch runs) from another format: agentloop import swebench FILE --repos DIR."),
    "batch": ("agentloop.commands.batch:batch_command",
              "Run every (task, sample) of a task file; rerunning resumes."),
}


class AgentloopGroup(click.Group):
    """Loads commands on first use, and turns agentloop's errors into one line on stderr and the
    documented exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, attribute = COMMANDS[name][0].split(":")
            # __import__ rather than importlib.import_module: only the former shows in -X importtime.
            self.add_command(getattr(__import__(module, fromlist=[attribute]), attribute), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands or name not in COMMANDS:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AgentloopError as exc:
            click.echo(f"agentloop: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("agentloop: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=AgentloopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentloop")
def cli() -> None:
    """Close the loop between a language model and your code: patch, run the checks, feed back,
    until they pass. Every run is recorded under .agentloop/runs/.

    Exit codes: 0 success, 1 not fixed / refused, 2 usage error, 3 provider error, 130 interrupted.
    """


def main() -> None:
    import signal

    from agentloop.interrupts import raise_interrupt

    signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM ends a command like Ctrl-C: exit 130, tree in order
    # A background job of a script starts with SIGINT ignored, and Python then leaves it so: `kill -INT`
    # would do nothing to `agentloop batch &` (a `fix` run installs its own handler). Ctrl-C always stops.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cli()
