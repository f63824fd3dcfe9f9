"""The start of a run, before any turn: the checks set up (sandbox, protected files) and run once.

A check that cannot start at all (a typo in its command) ends the run here, before a model is asked.
"""

from __future__ import annotations

from agentloop.errors import UsageError
from agentloop.workspace.checks import CommandResult, cannot_start
from agentloop.workspace.suite import CheckSuite


def first_checks(checks: CheckSuite, start_tree: str, first_results: list[CommandResult] | None = None, *,
                 prefetch: bool = False, ignored: list[str] | None = None) -> list[CommandResult]:
    """Set the checks up on `start_tree` and run them (or record `first_results`, the checks as the
    caller has just run them: the pre-commit hook). `prefetch`: import litellm meanwhile. `ignored`:
    the workspace's ignored files, when the caller knows them (see CheckSuite.set_up)."""
    checks.set_up(start_tree, ignored)
    if prefetch and not first_results:
        prefetch_litellm()  # while the first checks run: it takes seconds, and they will likely fail
    results = checks.record_first(first_results) if first_results else checks.run()
    for result in results:  # a typo in a check costs no model turn
        why = cannot_start(result)
        if why:
            raise UsageError(f"check `{result.command}` cannot start ({why}); fix the command "
                             "(--check/--accept or .agentloop.yaml) and run again")
    return results


def prefetch_litellm() -> None:
    """Import litellm in a background thread; the first model call then finds it loaded."""
    import threading

    def load() -> None:
        try:
            from agentloop.run.model import import_litellm

            import_litellm()
        except Exception:  # noqa: BLE001 - the model call will import it again and report the error
            pass

    threading.Thread(target=load, name="agentloop-prefetch", daemon=True).start()
