"""The data an edit passes through: parsed from a reply, validated, applied, reported."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

EditKind = Literal["replace", "write", "create", "delete", "rename", "function"]
EditFormat = Literal["search_replace", "udiff", "whole", "apply_patch", "function"]
FailureReason = Literal[
    "not_found", "ambiguous", "already_applied", "path_refused", "protected", "binary", "malformed"
]


@dataclass
class Edit:
    """One change to one file, as the model expressed it.

    replace: swap `search` for `replace` (SEARCH/REPLACE block, one diff hunk, one apply_patch chunk).
    write:   set the whole content of `path` to `replace` (whole-file block).
    create / delete: the file appears (content in `replace`) or goes.
    rename:  `path` becomes `new_path` (optionally with replace hunks as separate edits).
    function: replace the Python definition named `search` (`name` or `Class.method`) with `replace`.
    """

    kind: EditKind
    path: str
    search: str = ""
    replace: str = ""
    new_path: str | None = None
    line_hint: int | None = None  # 1-based line the model claimed (diff @@ header), if any
    format: EditFormat = "search_replace"
    index: int = 0  # position in the reply, 1-based, for messages ("edit 2")
    # Added by the applier (all optional):
    anchor: str | None = None  # apply_patch `@@ def f():` line: the chunk comes after it
    at_eof: bool = False  # apply_patch `*** End of File`: the chunk ends the file
    error: str | None = None  # the block is malformed (e.g. cut short); refused as "malformed"
    path_given: bool = True  # False when the reply named no path at all
    reply_line: int = 0  # 1-based line of the reply where the edit starts
    lang: str | None = None  # fence language of a whole-file block, if given
    mode: str | None = None  # git mode a diff gives a new file (`new file mode 100755`), if any

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EditFailure:
    """Why an edit was refused, written so the model can fix it on the next turn."""

    index: int
    path: str
    reason: FailureReason
    message: str  # includes the closest real lines of the file with their numbers

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ApplyResult:
    """The outcome of applying a whole reply: all of it, or none of it."""

    edits: list[Edit] = field(default_factory=list)
    applied: bool = False
    changed_files: list[str] = field(default_factory=list)
    failures: list[EditFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # forgiveness used, e.g. "matched ignoring indentation"
    would_apply: list[int] = field(default_factory=list)  # indexes of edits that validated (or applied)
    dry_run: bool = False  # validated only: `applied` then means "would apply", nothing was written

    def to_dict(self) -> dict:
        return {
            "applied": self.applied,
            "changed_files": self.changed_files,
            "failures": [f.to_dict() for f in self.failures],
            "notes": self.notes,
            "would_apply": self.would_apply,
            "dry_run": self.dry_run,
            "edits": [e.to_dict() for e in self.edits],
        }
