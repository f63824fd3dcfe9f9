"""Shared bits of the run-reading commands: the --runs-dir option and colours that respect NO_COLOR."""

from __future__ import annotations

import os
import sys

import click

from agentloop.outcome import Outcome

runs_dir_option = click.option(
    "--runs-dir", metavar="DIR",
    help="Where runs are recorded (default: the repository's configured runs directory, .agentloop/runs).")

# Lets a RUN argument be `-1`, `-2`, ... (the newest runs) rather than an unknown option.
RUN_ARG_SETTINGS = {"ignore_unknown_options": True}



def use_colour(stream=None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: bool, **style) -> str:
    return click.style(text, **style) if colour else text


def outcome_style(outcome: str, text: str, colour: bool | None = None) -> str:
    colour = use_colour() if colour is None else colour
    known = Outcome.of(outcome)
    return paint(text, colour, fg=known.colour if known else "white", bold=known == Outcome.ACCEPTED)
