"""What a run leaves for CI: the final patch as a file, and a Markdown report in the job summary.

Both are written so that a job killed half-way never leaves a truncated patch behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentloop.errors import UsageError
from agentloop.outcome import Outcome

SUMMARY_DIFF_CAP = 60_000  # characters of diff shown in the job summary (GitHub allows 1 MiB per step)


def write_patch(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (temporary file beside it, then a rename)."""
    from agentloop.files import atomic_write

    path = path.expanduser()
    if not path.parent.is_dir():
        raise UsageError(f"--output-patch {path}: folder {path.parent} does not exist; create it or pick another path")
    atomic_write(path, text)


def step_summary_markdown(summary: Mapping[str, Any], diff: str, *, title: str = "agentloop fix") -> str:
    """A short report: outcome, turns, cost, the checks, and the diff (capped)."""
    icon = "✅" if summary.get("outcome") == Outcome.ACCEPTED else "❌"
    lines = [
        f"### {icon} {title}: {summary.get('outcome')}",
        "",
        f"{summary.get('reason', '')}".strip(),
        "",
        "| turns | model calls | tokens | cost | time | model | run |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
        f"| {summary.get('turns', 0)} | {summary.get('model_calls', 0)} | {summary.get('tokens', 0)} "
        f"| ${summary.get('cost_usd', 0.0):.4f} | {summary.get('duration_s', 0.0):.1f}s "
        f"| `{summary.get('model') or '-'}` | `{summary.get('run_id', '-')}` |",
        "",
    ]
    checks = summary.get("checks") or []
    if checks:
        lines += [f"- {'pass' if c.get('passed') else 'FAIL'} (exit {c.get('exit_code')}): `{c.get('command')}`"
                  for c in checks]
        lines.append("")
    if diff.strip():
        shown = diff if len(diff) <= SUMMARY_DIFF_CAP else diff[:SUMMARY_DIFF_CAP] + "\n[... diff cut ...]\n"
        fence = "````" if "```" in shown else "```"
        lines += ["<details open><summary>The change</summary>", "", f"{fence}diff", shown.rstrip("\n"), fence,
                  "", "</details>", ""]
    else:
        lines += ["No change to the code.", ""]
    return "\n".join(lines) + "\n"


def append_step_summary(summary: Mapping[str, Any], diff: str, environ: Mapping[str, str] | None = None,
                        *, title: str = "agentloop fix") -> Path | None:
    """Append the report to `$GITHUB_STEP_SUMMARY` when the job defines it; return the file written."""
    environ = os.environ if environ is None else environ
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(step_summary_markdown(summary, diff, title=title))
    return Path(target)
