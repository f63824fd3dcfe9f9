"""The `agentloop` command line. Each command lives in `agentloop/commands/`; imports stay lazy
so that `agentloop --help` and a passing pre-commit run are instant."""

from __future__ import annotations

import click

from agentloop import __version__
from agentloop.commands.apply import apply_command
from agentloop.commands.export import export_command
from agentloop.commands.fix import fix_command
from agentloop.commands.hook import hook_command
from agentloop.commands.init import init_command
from agentloop.commands.replay import replay_command
from agentloop.commands.runs import runs_command
from agentloop.commands.show import show_command
from agentloop.errors import EXIT_INTERRUPTED, AgentloopError


class AgentloopGroup(click.Group):
    """Turns agentloop's errors into one line on stderr and the documented exit code."""

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


cli.add_command(fix_command)
cli.add_command(apply_command)
cli.add_command(init_command)
cli.add_command(runs_command)
cli.add_command(show_command)
cli.add_command(replay_command)
cli.add_command(export_command)
cli.add_command(hook_command)


def main() -> None:
    cli()
