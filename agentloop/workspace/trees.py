"""Git trees edited and compared in process, over the long-lived git processes of
agentloop.workspace.gitbatch: a turn's tree (`Workspace.tree_with`) and what differs between two
trees (`git diff --raw`) without starting git (about 2.5 ms of CPU each, three a turn).

Only the plain cases are handled here, each exactly as git's own commands would answer; anything
else (a path git would refuse or treat specially, a file that replaces a folder or the reverse, an
unusual file mode, something that is not a tree) returns None and the caller asks git as before.
Trees read are kept by id (an id names the same content for good).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agentloop.workspace import gitbatch, objects

TREE, GITLINK = b"40000", b"160000"
_FILE_MODES = {b"100644", b"100755", b"120000"}
_MODES = {TREE, GITLINK, *_FILE_MODES}
_TYPES = {TREE: "tree", GITLINK: "commit"}

Entries = dict[bytes, tuple[bytes, str]]  # name -> (mode as git stores it, object id)

_EMPTY = {bytes.fromhex("4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
          bytes.fromhex("6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321")}
_TREES: dict[tuple[str, str], Entries] = {}
_MEMO_SIZE = 4096


def read_tree(cwd: Path, tree: str) -> Entries | None:
    """The entries of `tree` (an object id), or None if it is not a plain tree (missing, another kind
    of object, an entry mode git would not write itself, a name twice)."""
    key = (str(cwd), tree)
    found = _TREES.get(key)
    if found is not None:
        return found
    obj = gitbatch.read_object(cwd, tree)
    if obj is None or obj[0] != "tree":
        return None
    size, data, pos, entries = len(tree) // 2, obj[1], 0, {}
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        mode, name = data[pos:space], data[space + 1:nul]
        if mode not in _MODES or name in entries or (mode == TREE and data[nul + 1:nul + 1 + size] in _EMPTY):
            return None  # (an empty folder the index would drop)
        entries[name] = (mode, data[nul + 1:nul + 1 + size].hex())
        pos = nul + 1 + size
    if len(_TREES) >= _MEMO_SIZE:
        _TREES.clear()
    _TREES[key] = entries
    return entries


def plain_path(rel: str) -> bool:
    """A path update-index takes as it is: no empty, `.`/`..` or .git-like part (git refuses those),
    nothing git would quote or refuse on some file systems."""
    if not rel or "\n" in rel or "\0" in rel or "\\" in rel:
        return False
    for part in rel.split("/"):
        low = part.lower()
        if part in ("", ".", "..") or low.startswith(".git") or "~" in part or part.endswith((" ", ".")):
            return False
    return True


def edit_tree(cwd: Path, base: str | None, new: Mapping[str, tuple[str, str] | None],
              store: Path | None = None) -> str | None:
    """`base` (None: the empty tree) with each path of `new` set to (mode, blob id), or removed (None),
    written as `git update-index --index-info` and `git write-tree` write it; None when that needs
    git (see the module's docstring). `store`: the object folder of a repository agentloop made,
    where new trees are written in process (agentloop.workspace.objects), not by `git mktree`."""
    paths = sorted(new)
    if not all(map(plain_path, paths)) or any(b.startswith(a + "/") for a, b in zip(paths, paths[1:], strict=False)):
        return None  # (sorted: a path that is a folder of another one comes right before some path under it)
    root = _Node.open(cwd, base)
    if root is None:
        return None
    root.store = store
    for rel in paths:
        *folders, name = (part.encode("utf-8", "surrogateescape") for part in rel.split("/"))
        node = root
        for folder in folders:
            below = node.child(folder, create=new[rel] is not None)
            if below is None:
                if node.invalid:
                    return None
                break  # (removing a file under a folder there is not: nothing to do)
            node = below
        else:
            if not node.set(name, new[rel]):
                return None
    return root.write(root=True)


class _Node:
    """A tree being edited: its entries, and the subtrees opened for editing."""

    def __init__(self, cwd: Path, tree: str | None, entries: Entries):
        self.cwd, self.tree, self.entries = cwd, tree, dict(entries)
        self.store: Path | None = None  # see edit_tree
        self.children: dict[bytes, _Node] = {}
        self.changed = False
        self.invalid = False  # an edit here needs git

    @classmethod
    def open(cls, cwd: Path, tree: str | None) -> _Node | None:
        entries = {} if tree is None else read_tree(cwd, tree)
        return None if entries is None else cls(cwd, tree, entries)

    def child(self, name: bytes, *, create: bool) -> _Node | None:
        """The subtree `name`, opened (made, if `create`); None when there is none, or it cannot be
        edited here (then this node is marked invalid)."""
        if name in self.children:
            return self.children[name]
        entry = self.entries.get(name)
        node = None
        if entry is None:
            if create:
                node = _Node(self.cwd, None, {})
        elif entry[0] == TREE:
            node = _Node.open(self.cwd, entry[1])
        if node is None and entry is not None:  # a file where a folder is wanted, or an unreadable tree
            self.invalid = True
        if node is not None:
            node.store = self.store
            self.children[name] = node
        return node

    def set(self, name: bytes, value: tuple[str, str] | None) -> bool:
        """Set (or remove) the file `name`; False when that needs git (a folder or submodule there)."""
        entry = self.entries.get(name)
        if entry is not None and entry[0] not in _FILE_MODES:
            return False
        if value is None:
            if entry is not None:
                del self.entries[name]
                self.changed = True
            return True
        mode = value[0].encode()
        if mode not in _FILE_MODES:
            return False
        if entry != (mode, value[1]):
            self.entries[name] = (mode, value[1])
            self.changed = True
        return True

    def write(self, *, root: bool = False) -> str | None:
        """The id of this tree as edited, stored if it changed; None for a tree left empty, which the
        index does not hold (the root is written even then: write-tree writes the empty tree)."""
        for name, node in self.children.items():
            tree = node.write()
            if tree != (self.entries.get(name) or (None, None))[1]:
                self.changed = True
                if tree is None:
                    del self.entries[name]
                else:
                    self.entries[name] = (TREE, tree)
        if not self.changed and self.tree is not None:
            return self.tree
        if not self.entries and not root:
            return None
        if self.store is not None:
            return objects.write_tree(self.store, self.entries)
        records = b"".join(b"%s %s %s\t%s\0" % (mode, _TYPES.get(mode, "blob").encode(), oid.encode(), name)
                           for name, (mode, oid) in self.entries.items())
        with gitbatch.batch(self.cwd, gitbatch.MKTREE).exchange() as writer:
            writer.send(records + b"\0")
            return writer.read_line().decode()
