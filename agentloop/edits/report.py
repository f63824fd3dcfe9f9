"""Feedback for the model when a reply's edits were refused: short, specific, actionable."""

from __future__ import annotations

from agentloop.edits.types import ApplyResult, Edit

_REASONS = {
    "not_found": "the text to replace was not found",
    "ambiguous": "it matches more than one place",
    "already_applied": "it is already applied",
    "path_refused": "the path was refused",
    "protected": "the file is protected",
    "binary": "the file is binary",
    "malformed": "the edit is malformed",
}
_FORMATS = {
    "search_replace": "SEARCH/REPLACE block",
    "udiff": "diff hunk",
    "whole": "whole-file block",
    "apply_patch": "apply_patch section",
    "function": "definition block",
}
_MAX_CHARS = 6000


def _label(e: Edit | None, index: int, path: str) -> str:
    if e is None:
        return f"Edit {index} ({path})" if index else f"Writing {path}"
    where = f", reply line {e.reply_line}" if e.reply_line else ""
    return f"Edit {index} ({_FORMATS.get(e.format, e.format)} for {path or '?'}{where})"


def render_failures(result: ApplyResult) -> str:
    """Which edits failed and why, the file's real lines nearby, and which edits would have applied."""
    if not result.failures:
        return ""
    by_index = {e.index: e for e in result.edits}
    n_fail = len(result.failures)
    out = [
        f"{n_fail} of {len(result.edits)} edit(s) could not be applied, so none were (a reply applies "
        "all or nothing). Fix these and send all the edits again:"
    ]
    for f in result.failures:
        out.append(f"\n{_label(by_index.get(f.index), f.index, f.path)}: {_REASONS.get(f.reason, f.reason)}.")
        if f.message:
            out.append(f.message)
    ok = [i for i in result.would_apply if i not in {f.index for f in result.failures}]
    if ok:
        out.append(f"\nEdit(s) {', '.join(map(str, ok))} would have applied as written.")
    text = "\n".join(out)
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS - 40] + "\n[... feedback cut short ...]"
    return text
