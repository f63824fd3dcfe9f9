"""What a run's result is: the files the model's edits created, modified or deleted, nothing else.

Checks write in the tree (bytecode, caches, build outputs; a hostile one deletes or plants files), so
the result is never a snapshot of the tree. It is a git tree: the start plus each path an edit
changed, recorded as that edit left it, before any check ran. In place, a file git does not see (an
ignored `.env`) that an edit is about to change first has its prior content added to the start
(`base`), so that undo and an interrupt can put it back byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from agentloop.workspace.repo import Workspace, tree_listing


class EditedResult:
    """The run's start (`base`) and result (`tree`) as git trees, kept up to date edit by edit."""

    def __init__(self, workspace: Workspace, start_tree: str, *, in_place: bool,
                 on_base: Callable[[str], None] | None = None):
        self.workspace, self.in_place, self.on_base = workspace, in_place, on_base
        self.base = start_tree
        self.tree = start_tree
        self.pending: list[str] = []  # paths an edit is writing right now (an interrupt may land mid-write)
        self._base_paths: set[str] | None = None

    def expect(self, changed: list[str]) -> list[str]:
        """Before an edit writes `changed`: note them, and (in place) add to the start the prior content
        of those the start lacks but the disk has. Returns those paths, so that trees recorded
        earlier can be given them too."""
        self.pending = self.edited_paths(changed)
        if not self.in_place:
            return []
        if self._base_paths is None:
            out = tree_listing(self.workspace.root, self.base)
            self._base_paths = {item.split("\t", 1)[1] for item in out.split("\0") if item}
        unseen = [p for p in self.pending if p not in self._base_paths and os.path.lexists(self.workspace.root / p)]
        if unseen:  # (an edit to files of the start, the usual one, needs no diff of the result for this)
            edited = {c.path for c in self.workspace.changes(self.base, self.tree)}
            unseen = [p for p in unseen if p not in edited]
        if unseen:  # as they are now, before the edit
            self.base = self.workspace.tree_with(self.base, unseen)
            self.tree = self.workspace.tree_with(self.tree, unseen)
            self._base_paths.update(unseen)
            if self.on_base is not None:
                self.on_base(self.base)
        return unseen

    def record(self, changed: list[str]) -> str:
        """After an edit wrote `changed`: take their content into the result; returns the tree before."""
        before = self.tree
        self.tree = self.workspace.tree_with(before, self.edited_paths(changed))
        self.pending = []
        return before

    def settle(self) -> str:
        """The result, counting an edit that an interrupt caught while it was being written."""
        if self.pending:
            self.tree = self.workspace.tree_with(self.tree, self.pending)
            self.pending = []
        return self.tree

    def edited_paths(self, changed: list[str]) -> list[str]:
        """The paths an edit changed, plus, for one written through a symlink, the file it points to."""
        paths = list(changed)
        root = os.path.realpath(self.workspace.root)
        for rel in changed:
            full = self.workspace.root / rel
            if os.path.islink(full):
                real = os.path.realpath(full)
                if real.startswith(root + os.sep):
                    paths.append(os.path.relpath(real, root))
        return list(dict.fromkeys(paths))
