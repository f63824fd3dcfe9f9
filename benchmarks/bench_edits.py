"""Measure the edit applier on real code: correct, refused, wrong; beside `git apply` and GNU `patch`.

Corpus: Python standard-library sources. Each case is a real change to a real file, rendered in a
format (SEARCH/REPLACE, unified diff, apply_patch, whole file, whole definition `path::name`) with
one mistake models make. The function format is tried on the changes that fall inside one top-level
function or method (a method written at column 0 is its `indent_shift`).
"wrong" means the tool reported success but the file differs from the intended result.

Must-refuse cases aim the edit outside the repository (`../x.py`, an absolute path outside, a
symlinked directory leading out, `.git/`) while an in-repository file holds the same text: the only
right outcome is a refusal that changes nothing, inside the repository or out.

Run:  /work/venv/bin/python benchmarks/bench_edits.py [--files 40] [--changes 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentloop.edits import apply_reply  # noqa: E402

FORMATS = ["search_replace", "udiff", "apply_patch", "whole"]
BY_NAME = ["function"]  # the definition named: a path with no `.py` cannot take it
MISTAKES = {
    "none": FORMATS + BY_NAME,
    "indent_shift": ["search_replace", "udiff", "apply_patch"] + BY_NAME,
    "trailing_spaces": ["search_replace", "udiff", "apply_patch"],
    "curly_quotes": ["search_replace", "udiff", "apply_patch"],
    "collapsed_blanks": ["search_replace", "udiff", "apply_patch"],
    "elided_lines": ["search_replace", "apply_patch"],
    "stale_line_numbers": ["udiff"],
    "wrong_counts": ["udiff"],
    "no_context": ["search_replace", "udiff", "apply_patch"],
    "extra_context": ["search_replace", "udiff", "apply_patch"],
    "wrong_path_prefix": FORMATS + BY_NAME,
    "basename_path": FORMATS + BY_NAME,
    "placeholder_path": ["search_replace", "whole"],
    # SEARCH leaves out a blank line the file has, REPLACE keeps it (only cases that have one).
    "blank_kept": ["search_replace", "udiff", "apply_patch"],
    # The file has no extension (`Makefile`-like name); a copy with the same text is also in play,
    # so only the path line can say which file is meant.
    "no_extension": FORMATS,
}
# Edits aimed outside the repository: refused, never redirected onto the in-repository file.
MUST_REFUSE = {
    "escaping_path": FORMATS + BY_NAME,
    "absolute_outside": FORMATS + BY_NAME,
    "symlink_escape": FORMATS + BY_NAME,
    "git_dir_path": ["search_replace", "udiff", "apply_patch"] + BY_NAME,
}
MISTAKES.update(MUST_REFUSE)
MISTAKES_AGENTLOOP_ONLY = set(MUST_REFUSE) | {"no_extension"}
CURLY = str.maketrans({'"': "\u201c", "'": "\u2019"})


@dataclass
class Change:
    rel: str
    old: str
    new: str


# -- corpus ----------------------------------------------------------------------------------------
def corpus(n_files: int, rng: random.Random) -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in sorted(stdlib.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in p.parts):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 150 <= text.count("\n") <= 4000 and "\r" not in text and text.endswith("\n"):
            files.append((str(p.relative_to(stdlib)), text))
    rng.shuffle(files)
    return files[:n_files]


def make_change(rel: str, text: str, rng: random.Random) -> Change | None:
    """A realistic edit: rename a token, insert a call, delete or rewrite lines inside a function."""
    lines = text.splitlines(keepends=True)
    code = [
        i
        for i, ln in enumerate(lines)
        if ln.startswith("    ") and ln.strip() and not ln.strip().startswith("#") and 5 < i < len(lines) - 5
    ]
    if not code:
        return None
    i = rng.choice(code)
    ln = lines[i]
    indent = ln[: len(ln) - len(ln.lstrip())]
    kind = rng.choice(["modify", "insert", "delete", "rewrite"])
    new = list(lines)
    if kind == "modify":
        words = [
            w for w in ln.replace("(", " ").replace(")", " ").replace(".", " ").split() if w.isidentifier()
        ]
        if not words:
            return None
        w = rng.choice(words)
        new[i] = ln.replace(w, w + "_v2", 1)
    elif kind == "insert":
        n = rng.randint(1, 3)
        add = [f'{indent}_trace("step {k}", {rng.randint(0, 99)})\n' for k in range(n)]
        new[i + 1 : i + 1] = add
    elif kind == "delete":
        del new[i : i + rng.randint(1, 2)]
    else:
        new[i : i + 2] = [
            f"{indent}value = compute('{rng.randint(0, 999)}')\n",
            f"{indent}if value is None:\n",
            f"{indent}    return None\n",
        ]
    if new == lines:
        return None
    return Change(rel, text, "".join(new))


# -- rendering -------------------------------------------------------------------------------------
def hunks(old: str, new: str, n: int) -> list[tuple[int, list[tuple[str, str]]]]:
    """Unified-diff hunks as (old_start, [(tag, text)])."""
    out = []
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=n))[2:]
    for d in diff:
        if d.startswith("@@"):
            start = int(d.split()[1][1:].split(",")[0])
            out.append((start, []))
        else:
            out[-1][1].append((d[:1], d[1:]))
    return out


def unique_context(change: Change, base: int) -> int:
    """Context size a careful author uses: at least `base`, more until each search block is unique."""
    for n in range(base, 40):
        ok = True
        for _, hl in hunks(change.old, change.new, n):
            search = "\n".join(t for tag, t in hl if tag != "+") + "\n"
            if change.old.count(search) != 1:
                ok = False
        if ok:
            return n
    return 40


def mutate(hl: list[tuple[str, str]], mistake: str) -> list[tuple[str, str]]:
    if mistake == "indent_shift":
        texts = [t for _, t in hl if t.strip()]
        common = min(len(t) - len(t.lstrip()) for t in texts) if texts else 0
        if common:
            return [(tag, t[common:] if t.strip() else t) for tag, t in hl]
        return [(tag, "    " + t if t.strip() else t) for tag, t in hl]
    if mistake == "trailing_spaces":
        return [(tag, t + "  ") for tag, t in hl]
    if mistake == "curly_quotes":
        return [(tag, t.translate(CURLY)) for tag, t in hl]
    if mistake == "collapsed_blanks":
        return [(tag, t) for tag, t in hl if not (tag == " " and not t.strip())]
    if mistake == "blank_kept":  # a blank context line only REPLACE has: `+` in a diff
        return [("+", t) if tag == " " and not t.strip() else (tag, t) for tag, t in hl]
    if mistake == "elided_lines":
        lead = 0
        while lead < len(hl) and hl[lead][0] == " ":
            lead += 1
        if lead >= 6:
            ind = hl[2][1][: len(hl[2][1]) - len(hl[2][1].lstrip())]
            return hl[:1] + [(" ", ind + "...")] + hl[lead - 1 :]
    return hl


def target_rel(change: Change, mistake: str) -> str:
    """Where the changed file sits in the repository for this mistake."""
    return extensionless(change.rel) if mistake == "no_extension" else change.rel


def extensionless(rel: str) -> str:
    return Path(rel).stem.capitalize() + "file"  # json/decoder.py -> Decoderfile


def render(change: Change, fmt: str, mistake: str, rng: random.Random, outside: Path | None = None) -> str | None:
    rel = target_rel(change, mistake)
    path = {"wrong_path_prefix": "cpython/Lib/" + rel, "basename_path": Path(rel).name,
            "placeholder_path": "path/to/file.py", "escaping_path": "../" + rel,
            "absolute_outside": f"{outside}/{rel}", "symlink_escape": f"vendored/{Path(rel).name}",
            "git_dir_path": f".git/{Path(rel).name}"}.get(mistake, rel)  # fmt: skip
    if fmt == "whole":
        return f"Here is the updated file.\n\n{path}\n```python\n{change.new}```\n"
    if fmt == "function":
        found = changed_definition(change)
        if found is None:
            return None  # the change is not inside one function or method
        name, code = found
        if mistake == "indent_shift":
            if "." not in name:
                return None  # a top-level function has no indentation to get wrong
            code = textwrap.dedent(code)
        return f"Here is the changed definition.\n\n{path}::{name}\n```python\n{code}```\n"
    n = {"no_context": 0, "extra_context": 8, "elided_lines": 8}.get(mistake, 3)
    n = max(n, unique_context(change, n)) if mistake != "no_context" else 0
    hs = [(start, mutate(hl, mistake)) for start, hl in hunks(change.old, change.new, n)]
    if mistake == "blank_kept" and all(hl == orig for (_, hl), (_, orig) in
                                       zip(hs, hunks(change.old, change.new, n), strict=True)):
        return None  # no blank context line to leave out: not a case of this mistake
    if fmt == "search_replace":
        out = []
        for _, hl in hs:
            s = "".join(t + "\n" for tag, t in hl if tag != "+")
            r = "".join(t + "\n" for tag, t in hl if tag != "-")
            out.append(f"{path}\n```python\n<<<<<<< SEARCH\n{s}=======\n{r}>>>>>>> REPLACE\n```\n")
        return "I'll make this change:\n\n" + "\n".join(out)
    if fmt == "apply_patch":
        body = "".join("@@\n" + "".join(f"{tag}{t}\n" for tag, t in hl) for _, hl in hs)
        return f"*** Begin Patch\n*** Update File: {path}\n{body}*** End Patch\n"
    # unified diff
    a, b = (f"a/{path}", f"b/{path}") if not path.startswith("/") else (path, path)
    out = [f"--- {a}\n+++ {b}\n"]
    for start, hl in hs:
        oc = sum(1 for tag, _ in hl if tag != "+")
        nc = sum(1 for tag, _ in hl if tag != "-")
        if mistake == "stale_line_numbers":
            start = max(1, start + rng.choice([-1, 1]) * rng.randint(7, 25))
        if mistake == "wrong_counts":
            oc, nc = oc + rng.randint(1, 4), max(0, nc - rng.randint(1, 3))
        out.append(f"@@ -{start},{oc} +{start},{nc} @@\n" + "".join(f"{tag}{t}\n" for tag, t in hl))
    return "```diff\n" + "".join(out) + "```\n"


def changed_definition(change: Change) -> tuple[str, str] | None:
    """(`name` or `Class.method`, its new source) when the change lies inside that one definition."""
    from agentloop.edits.definitions import _qualified, _start

    old, new = change.old.splitlines(keepends=True), change.new.splitlines(keepends=True)
    try:
        old_defs, new_defs = _qualified(ast.parse(change.old)), _qualified(ast.parse(change.new))
    except SyntaxError:
        return None
    ops = [op for op in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return None
    lo, hi = min(op[1] for op in ops) + 1, max(max(op[2], op[1] + 1) for op in ops)
    best = None
    for name, nodes in old_defs.items():
        if len(nodes) == 1 and _start(nodes[0]) <= lo and hi <= (nodes[0].end_lineno or 0):
            if best is None or _start(nodes[0]) > _start(old_defs[best][0]):
                best = name
    if best is None or len(new_defs.get(best, [])) != 1:
        return None
    node = new_defs[best][0]
    return best, "".join(new[_start(node) - 1: node.end_lineno])


# -- running ---------------------------------------------------------------------------------------
def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def run_agentloop(root: Path, change: Change, reply: str, mistake: str = "none", outside: Path | None = None) -> str:
    rel = target_rel(change, mistake)
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(change.old)
    known = [rel]
    if mistake == "no_extension":  # a twin with the same text: only the path can tell them apart
        (root / "twin.py").write_text(change.old)
        known.append("twin.py")
    if mistake in MUST_REFUSE and outside is not None:
        before_out = snapshot(outside)
        before_in = snapshot(root)
        res = apply_reply(root, reply, known_files=known)
        ok = not res.applied and snapshot(outside) == before_out and snapshot(root) == before_in
        if not ok and os.environ.get("BENCH_DEBUG"):
            print("=" * 30, "NOT REFUSED", mistake, res.notes, res.changed_files)
            print(reply[:800])
        return "refused" if ok else "wrong"
    res = apply_reply(root, reply, known_files=known)
    got = target.read_text() if target.exists() else None
    if mistake == "no_extension":
        twin_ok = (root / "twin.py").read_text() == change.old
        (root / "twin.py").unlink()
        target.unlink()
        if not twin_ok:
            return "wrong"
    if res.applied and not res.failures:
        if got != change.new and os.environ.get("BENCH_DEBUG"):
            print("=" * 30, change.rel, res.notes, res.changed_files)
            print(reply[:3000])
            print(
                "".join(
                    difflib.unified_diff(
                        change.new.splitlines(True), (got or "").splitlines(True), "want", "got"
                    )
                )
            )
        return "correct" if got == change.new else "wrong"
    if os.environ.get("BENCH_DEBUG") == "refused":
        print("=" * 30, change.rel, [(f.reason, f.message[:600]) for f in res.failures])
        print(reply[:1500])
    return "refused" if got == change.old else "wrong"


def run_tool(tool: str, root: Path, change: Change, reply: str) -> str:
    target = root / change.rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(change.old)
    patch = reply.removeprefix("```diff\n").removesuffix("```\n")
    cmd = ["git", "apply", "-"] if tool == "git apply" else ["patch", "-p1", "--batch", "--forward", "-s"]
    try:
        proc = subprocess.run(cmd, cwd=root, input=patch, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "refused"
    for leftover in list(root.rglob("*.orig")) + list(root.rglob("*.rej")):
        leftover.unlink()
    got = target.read_text() if target.exists() else None
    if proc.returncode == 0:
        return "correct" if got == change.new else "wrong"
    return "refused" if got == change.old else "wrong"


def timing(tmp: Path) -> tuple[float, int]:
    """Median time of apply_reply (parse, match, write) on a 5,000-line file, in milliseconds."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = ""
    for p in sorted(stdlib.glob("*.py")):
        text += p.read_text(encoding="utf-8", errors="replace")
        if text.count("\n") >= 5000:
            break
    text = "".join(text.splitlines(keepends=True)[:5000])
    root = tmp / "timing"
    root.mkdir()
    rng = random.Random(7)
    times = []
    for _ in range(60):
        ch = make_change("big.py", text, rng)
        if ch is None:
            continue
        (root / "big.py").write_text(text)
        reply = render(ch, "search_replace", "none", rng)
        t0 = time.perf_counter()
        res = apply_reply(root, reply)
        times.append((time.perf_counter() - t0) * 1000)
        assert res.applied, res.failures
    return statistics.median(times), text.count("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--changes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", help="run one mistake only (debugging)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tools = ["agentloop", "git apply"] + (["GNU patch"] if shutil.which("patch") else [])
    if args.only:
        tools = ["agentloop"]
    changes = []
    for rel, text in corpus(args.files, rng):
        for _ in range(args.changes):
            ch = make_change(rel, text, rng)
            if ch:
                changes.append(ch)
    results: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        roots = {t: tmp / t.replace(" ", "_") for t in tools}
        for r in roots.values():
            r.mkdir()
            subprocess.run(["git", "init", "-q", str(r)], check=True)
        # Outside the repository: a copy of each file, reachable through the `vendored` symlink.
        outside = tmp / "outside"
        outside.mkdir()
        (roots["agentloop"] / "vendored").symlink_to(outside)
        for k, ch in enumerate(changes):
            for mistake, fmts in MISTAKES.items():
                if args.only and mistake != args.only:
                    continue
                if mistake in MUST_REFUSE:
                    for p in list(outside.rglob("*")):
                        if p.is_file():
                            p.unlink()
                    (outside / Path(ch.rel).name).write_text(ch.old)
                    (outside / ch.rel).parent.mkdir(parents=True, exist_ok=True)
                    (outside / ch.rel).write_text(ch.old)
                for fmt in fmts:
                    reply = render(ch, fmt, mistake, random.Random(args.seed * 1000 + k), outside)
                    if reply is None:
                        continue
                    for tool in tools:
                        if tool != "agentloop" and (fmt != "udiff" or mistake in MISTAKES_AGENTLOOP_ONLY):
                            continue
                        if tool == "agentloop":
                            out = run_agentloop(roots[tool], ch, reply, mistake, outside)
                        else:
                            out = run_tool(tool, roots[tool], ch, reply)
                        results[(tool, fmt, mistake)][out] += 1
                        if tool == "agentloop" and out == "wrong" and len(examples[mistake]) < 2:
                            examples[mistake].append(f"{ch.rel}\n{reply}")
                        (roots[tool] / ch.rel).unlink(missing_ok=True)
        median_ms, n_lines = timing(tmp)
    elapsed = time.time() - t0

    print(f"{len(changes)} real changes to {args.files} stdlib files, seed {args.seed}, {elapsed:.0f}s\n")
    print(f"{'tool':<10} {'format':<15} {'mistake':<19} {'correct':>8} {'refused':>8} {'wrong':>6} {'n':>5}")
    totals: dict[tuple[str, bool], Counter] = defaultdict(Counter)
    for (tool, fmt, mistake), c in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        n = sum(c.values())
        print(f"{tool:<10} {fmt:<15} {mistake:<19} {c['correct'] / n:>8.1%} {c['refused'] / n:>8.1%} "
              f"{c['wrong']:>6} {n:>5}")  # fmt: skip
        label = "must-refuse" if mistake in MUST_REFUSE else "well-formed" if mistake == "none" else "malformed"
        totals[(tool, label)].update(c)
    print()
    for (tool, label), c in sorted(totals.items()):
        n = sum(c.values())
        if label == "must-refuse":
            print(f"{tool:<10} {label:<12} refused {c['refused'] / n:6.1%}  wrong {c['wrong']} of {n}")
            continue
        print(f"{tool:<10} {label:<12} correct {c['correct'] / n:6.1%}  refused {c['refused'] / n:6.1%}  "
              f"wrong {c['wrong']} of {n}")  # fmt: skip
    if not shutil.which("patch"):
        print("\nGNU patch not found on PATH: its column was skipped (apt-get install patch).")
    print("(git apply and GNU patch are run on the unified-diff cases only: they read no other format.)")
    print(f"\nmedian apply_reply time, {n_lines}-line file: {median_ms:.2f} ms")
    for mistake, ex in examples.items():
        print(f"\nWRONG example ({mistake}):\n" + ex[0][:1500])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    raise SystemExit(main())
