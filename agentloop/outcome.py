"""How a run ended: one type carrying, for each outcome, its exit code, its words and its colour.

A StrEnum, so an outcome compares equal to its name (`Outcome.ACCEPTED == "accepted"`) and is
written to JSON as that name; every module that speaks of outcomes names them through here.
"""

from __future__ import annotations

from enum import StrEnum

from agentloop.errors import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    BUDGET_EXHAUSTED = "budget_exhausted"
    GAVE_UP = "gave_up"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    INCOMPLETE = "incomplete"  # only read back: a recorded run with no summary (crashed or still running)

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]

    @property
    def words(self) -> str:
        """For sentences: `budget exhausted`, `gave up`."""
        return self.value.replace("_", " ")

    @property
    def colour(self) -> str:
        return _COLOURS[self]

    @classmethod
    def of(cls, name: object) -> Outcome | None:
        """The outcome a recorded name stands for, or None for a name agentloop never writes."""
        try:
            return cls(name)
        except ValueError:
            return None


_EXIT_CODES = {Outcome.ACCEPTED: EXIT_OK, Outcome.BUDGET_EXHAUSTED: EXIT_FAILED, Outcome.GAVE_UP: EXIT_FAILED,
               Outcome.ERROR: EXIT_ERROR, Outcome.INTERRUPTED: EXIT_INTERRUPTED, Outcome.INCOMPLETE: EXIT_ERROR}
_COLOURS = {Outcome.ACCEPTED: "green", Outcome.BUDGET_EXHAUSTED: "yellow", Outcome.GAVE_UP: "yellow",
            Outcome.ERROR: "red", Outcome.INTERRUPTED: "magenta", Outcome.INCOMPLETE: "magenta"}

FAILED_ON_THE_MERITS = (Outcome.BUDGET_EXHAUSTED, Outcome.GAVE_UP)  # not interrupted, error (infra) or incomplete
RUN_OUTCOMES = tuple(o for o in Outcome if o is not Outcome.INCOMPLETE)  # what a finished run records
