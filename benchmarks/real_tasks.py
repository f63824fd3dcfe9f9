"""Cut bug-fix tasks from real PyPI packages' sdists into benchmarks/tasks/ (one injected bug each).

Each task keeps the package's LICENSE, the source it needs and its own tests trimmed to the module(s)
the check runs; the bug is one exact text replacement in one file; `solution/` holds that file as
released. Each task also has a hidden `accept` command (the package's whole test modules for the buggy
code, plus more of its test modules kept in `hidden/`, outside repo/): run_suite.py runs it itself on a
fresh copy of the tool's final tree, never shows it to the tool, and judges "solved" by it. `--verify`
runs every real task's check and accept command before (must fail) and with the solution (must
pass). The sdists come from `pip download --no-binary :all: --no-deps PKG==VER` into --sdists.

    python benchmarks/real_tasks.py --sdists /work/cache/sdists            # write the tasks
    python benchmarks/real_tasks.py --verify                                 # fail before, pass after
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


@dataclass
class RealTask:
    name: str
    package: str            # PyPI name==version
    root: str               # the sdist's top folder
    licence: str            # licence file in the sdist
    keep: list[str]         # source files/folders, relative to root
    tests: list[str]        # test files kept (and anything they import)
    bug_file: str           # relative to root
    old: str                # exact text, found once in bug_file
    new: str
    description: str        # what the user sees wrong; never the file or the fix
    check: str
    pythonpath: str = "."
    drop: list[str] = field(default_factory=list)  # globs removed after copying (big data, translations)
    accept: str = ""        # hidden acceptance command (default: check); never shown to the tool
    hidden: list[str] = field(default_factory=list)  # more test modules from the sdist, only for accept


PYTEST = "python -m pytest -q -p no:cacheprovider"
# More of the package's own test modules, for the hidden accept command only (they use the buggy code too).
CACHETOOLS_MORE = ["tests/test_cached.py", "tests/test_cachedmethod.py", "tests/test_func.py"]
TOOLZ_MORE = ["toolz/tests/test_curried.py", "toolz/tests/test_recipes.py", "toolz/tests/test_dicttoolz.py"]

TASKS = [
    RealTask(
        "cachetools_typedkey", "cachetools==5.5.0", "cachetools-5.5.0", "LICENSE",
        ["src/cachetools"], ["tests/__init__.py", "tests/test_keys.py"],
        "src/cachetools/keys.py",
        "    key += tuple(type(v) for v in args)\n",
        "    key += tuple(type(v) for v in kwargs.values())\n",
        "cachetools' typedkey() gives 1 and 1.0 the same key, so typed caches mix up ints and floats: "
        "typed keys must differ when the argument types differ.",
        "python -m pytest -q -p no:cacheprovider tests/test_keys.py", pythonpath="src",
        accept=f"{PYTEST} tests/test_keys.py {' '.join(CACHETOOLS_MORE)}", hidden=CACHETOOLS_MORE),
    RealTask(
        "cachetools_lru", "cachetools==5.5.0", "cachetools-5.5.0", "LICENSE",
        ["src/cachetools"], ["tests/__init__.py", "tests/test_lru.py"],
        "src/cachetools/__init__.py",
        "    def __update(self, key):\n        try:\n            self.__order.move_to_end(key)\n",
        "    def __update(self, key):\n        try:\n            self.__order.move_to_end(key, last=False)\n",
        "LRUCache evicts the wrong item when it is full: it must drop the least recently used one.",
        "python -m pytest -q -p no:cacheprovider tests/test_lru.py", pythonpath="src",
        accept=f"{PYTEST} tests/test_lru.py {' '.join(CACHETOOLS_MORE)}", hidden=CACHETOOLS_MORE),
    RealTask(
        "toolz_partition_all", "toolz==1.0.0", "toolz-1.0.0", "LICENSE.txt",
        ["toolz", "tlz"], ["toolz/tests/test_itertoolz.py"],
        "toolz/itertoolz.py",
        "            yield prev[:len(seq) % n]\n",
        "            yield prev[:len(seq) // n]\n",
        "toolz.partition_all returns a wrong last group when the sequence's length is not a multiple "
        "of n (the last group must hold just the remaining items).",
        "python -m pytest -q -p no:cacheprovider toolz/tests/test_itertoolz.py",
        drop=["toolz/tests/test_[!i]*.py", "toolz/tests/test_inspect_args.py"],
        accept=f"{PYTEST} toolz/tests", hidden=[*TOOLZ_MORE, "toolz/tests/test_functoolz.py"]),
    RealTask(
        "toolz_compose", "toolz==1.0.0", "toolz-1.0.0", "LICENSE.txt",
        ["toolz", "tlz"], ["toolz/tests/test_functoolz.py"],
        "toolz/functoolz.py",
        "        for f in self.funcs:\n            ret = f(ret)\n",
        "        for f in reversed(self.funcs):\n            ret = f(ret)\n",
        "toolz.compose applies the functions in the wrong order when given three or more: "
        "compose(f, g, h)(x) must be f(g(h(x))).",
        "python -m pytest -q -p no:cacheprovider toolz/tests/test_functoolz.py",
        drop=["toolz/tests/test_[!f]*.py"],
        accept=f"{PYTEST} toolz/tests", hidden=[*TOOLZ_MORE, "toolz/tests/test_itertoolz.py"]),
    RealTask(
        "more_itertools_totient", "more-itertools==10.5.0", "more-itertools-10.5.0", "LICENSE",
        ["more_itertools"], ["tests/__init__.py", "tests/test_recipes.py"],
        "more_itertools/recipes.py",
        "        n -= n // prime\n",
        "        n -= prime\n",
        "more_itertools.totient returns wrong counts (totient(9) must be 6, totient(12) must be 4).",
        "python -m pytest -q -p no:cacheprovider tests/test_recipes.py -k Totient",
        accept="python -m pytest -q -p no:cacheprovider tests/test_recipes.py"),
    RealTask(
        "humanize_naturalsize", "humanize==4.11.0", "humanize-4.11.0", "LICENCE",
        ["src/humanize"], ["tests/__init__.py", "tests/test_filesize.py"],
        "src/humanize/filesize.py",
        "    for i, s in enumerate(suffix, 2):\n",
        "    for i, s in enumerate(suffix, 1):\n",
        "humanize.naturalsize prints the wrong unit and number for sizes of a kilobyte and more "
        "(naturalsize(10**6) must be '1.0 MB').",
        "python -m pytest -q -p no:cacheprovider tests/test_filesize.py", pythonpath="src",
        drop=["src/humanize/locale"],
        accept="python -m pytest -q -p no:cacheprovider tests/test_filesize.py"),
    RealTask(
        "humanize_intcomma", "humanize==4.11.0", "humanize-4.11.0", "LICENCE",
        ["src/humanize"], ["tests/__init__.py", "tests/test_number.py"],
        "src/humanize/number.py",
        '        new = re.sub(r"^(-?\\d+)(\\d{3})", rf"\\g<1>{thousands_sep}\\g<2>", orig)\n',
        '        new = re.sub(r"^(-?\\d+)(\\d{2})", rf"\\g<1>{thousands_sep}\\g<2>", orig)\n',
        "humanize.intcomma groups digits wrongly: intcomma(1000000) must be '1,000,000'.",
        "python -m pytest -q -p no:cacheprovider tests/test_number.py -k intcomma", pythonpath="src",
        drop=["src/humanize/locale"],
        accept="python -m pytest -q -p no:cacheprovider tests/test_number.py"),
    RealTask(
        "dateutil_relativedelta", "python-dateutil==2.9.0.post0", "python-dateutil-2.9.0.post0", "LICENSE",
        ["src/dateutil/__init__.py", "src/dateutil/_common.py", "src/dateutil/_version.py",
         "src/dateutil/relativedelta.py", "src/dateutil/easter.py"],
        ["tests/__init__.py", "tests/_common.py", "tests/test_relativedelta.py"],
        "src/dateutil/relativedelta.py",
        "            if month > 12:\n                year += 1\n                month -= 12\n",
        "            if month > 12:\n                year += 1\n                month -= 11\n",
        "Adding a relativedelta of months to a date lands in the wrong month when the result crosses "
        "into the next year (date(2003, 9, 17) + relativedelta(months=+4) must be 2004-01-17).",
        "python -m pytest -q -p no:cacheprovider tests/test_relativedelta.py", pythonpath="src",
        accept="python -m pytest -q -p no:cacheprovider tests/test_relativedelta.py"),
    RealTask(
        "idna_intranges", "idna==3.10", "idna-3.10", "LICENSE.md",
        ["idna"], ["tests/__init__.py", "tests/test_idna.py"],
        "idna/intranges.py",
        "        left, _ = _decode_range(ranges[pos])\n",
        "        _, left = _decode_range(ranges[pos])\n",
        "idna.encode rejects ordinary labels such as 'xn--zckzah' or 'abc' with 'Codepoint not allowed'.",
        "python -m pytest -q -p no:cacheprovider tests/test_idna.py",
        accept=f"{PYTEST} tests", hidden=[f"tests/test_{m}.py" for m in ("intranges", "idna_codec", "idna_compat",
                                                                          "idna_other")]),
    RealTask(
        "tabulate_afterpoint", "tabulate==0.9.0", "tabulate-0.9.0", "LICENSE",
        ["tabulate"], ["test/common.py", "test/test_internal.py", "test/test_output.py"],
        "tabulate/__init__.py",
        "                return len(string) - pos - 1\n",
        "                return len(string) - pos\n",
        "tabulate misaligns decimal numbers: with numalign='decimal' the decimal points of a column "
        "must line up.",
        "python -m pytest -q -p no:cacheprovider test/test_output.py -k 'simple or plain or grid'",
        accept="python -m pytest -q -p no:cacheprovider test/test_output.py test/test_internal.py"),
    RealTask(
        "boltons_format_int_list", "boltons==24.1.0", "boltons-24.1.0", "LICENSE",
        ["boltons/__init__.py", "boltons/strutils.py"], ["tests/test_strutils.py"],
        "boltons/strutils.py",
        "            elif delta > 1:\n                range_substr",
        "            elif delta > 2:\n                range_substr",
        "boltons.strutils.format_int_list joins ranges that are not contiguous: "
        "format_int_list([1, 3, 5, 6, 7, 8, 10, 11, 15]) must be '1,3,5-8,10-11,15'.",
        "python -m pytest -q -p no:cacheprovider tests/test_strutils.py",
        accept="python -m pytest -q -p no:cacheprovider tests/test_strutils.py"),
    RealTask(
        "six_iteritems", "six==1.16.0", "six-1.16.0", "LICENSE",
        ["six.py"], ["test_six.py"],
        "six.py",
        "    def iteritems(d, **kw):\n        return iter(d.items(**kw))\n",
        "    def iteritems(d, **kw):\n        return iter(d.values(**kw))\n",
        "six.iteritems(d) must iterate over the (key, value) pairs of d.",
        "python -m pytest -q -p no:cacheprovider test_six.py -k 'not move_items'",
        accept="python -m pytest -q -p no:cacheprovider test_six.py -k 'not dbm_ndbm'"),
]


def copy_path(src_root: Path, rel: str, dest_root: Path) -> None:
    src, dest = src_root / rel, dest_root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    else:
        shutil.copy2(src, dest)


def sdist_root(sdists: Path, task: RealTask) -> Path:
    root = sdists / task.root
    if not root.is_dir():
        archives = sorted(sdists.glob(f"{task.root}.tar.gz"))
        if not archives:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                            task.package, "-d", str(sdists)], check=True)
            archives = sorted(sdists.glob(f"{task.root}.tar.gz"))
        with tarfile.open(archives[0]) as tf:
            tf.extractall(sdists, filter="data")
    return root


def write_task(task: RealTask, sdists: Path) -> None:
    src = sdist_root(sdists, task)
    out = TASKS_DIR / task.name
    if out.exists():
        shutil.rmtree(out)
    repo = out / "repo"
    for rel in [task.licence, *task.keep, *task.tests]:
        copy_path(src, rel, repo)
    for pattern in task.drop:
        for path in repo.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (repo / "pytest.ini").write_text(f"[pytest]\npythonpath = {task.pythonpath}\n", encoding="utf-8")
    original = (src / task.bug_file).read_text(encoding="utf-8")
    if original.count(task.old) != 1:
        raise SystemExit(f"{task.name}: the bug's text occurs {original.count(task.old)} times in {task.bug_file}")
    (repo / task.bug_file).write_text(original.replace(task.old, task.new), encoding="utf-8")
    (out / "solution" / task.bug_file).parent.mkdir(parents=True, exist_ok=True)
    (out / "solution" / task.bug_file).write_text(original, encoding="utf-8")
    for rel in task.hidden:
        copy_path(src, rel, out / "hidden")
    lines = original.count("\n")
    (out / "task.yaml").write_text(
        f"# Cut from the {task.package} sdist by benchmarks/real_tasks.py (licence: repo/{task.licence});\n"
        f"# one injected bug in {task.bug_file} ({lines} lines); solution/ holds the file as released.\n"
        f"description: {quote(task.description)}\n"
        f"files: [{task.bug_file}]\n"
        "give_files: false  # neither tool is told which file to edit: finding it is part of the task\n"
        f"check: {quote(task.check)}\n"
        "# accept: run by run_suite.py on a fresh copy of the tool's final tree, tests restored, hidden/ laid\n"
        "# over it; never shown to the tool. \"solved\" means this passes.\n"
        f"accept: {quote(task.accept or task.check)}\n"
        f"source: {task.package}\n", encoding="utf-8")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_passes(command: str, repo: Path) -> tuple[bool, str]:
    proc = subprocess.run(shlex.split(command), cwd=repo, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
                               "PYTHONDONTWRITEBYTECODE": "1"})
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-1500:]


def verify(task: RealTask, commands: tuple[str, ...] = ("check", "accept")) -> bool:
    """The visible check and the hidden accept command both fail on repo/ and pass with solution/ over it."""
    out = TASKS_DIR / task.name
    verdicts = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "repo"
        shutil.copytree(out / "repo", tree)
        if (out / "hidden").is_dir():
            shutil.copytree(out / "hidden", tree, dirs_exist_ok=True)
        for when in ("before", "after"):
            if when == "after":
                shutil.copytree(out / "solution", tree, dirs_exist_ok=True)
            for name in commands:
                verdicts[name, when] = check_passes(task.accept or task.check if name == "accept" else task.check,
                                                    tree)
    good = all(not verdicts[name, "before"][0] and verdicts[name, "after"][0] for name in commands)
    print(f"{task.name:26} " + " ".join(f"{name} {when}={'pass' if verdicts[name, when][0] else 'FAIL'}"
                                        for name, when in verdicts) + f" {'ok' if good else 'BAD'}")
    if not good:
        for (name, when), (passed, text) in verdicts.items():
            if passed == (when == "before"):
                print(f"--- {name} {when}:\n{text}")
    return good


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdists", type=Path, help="folder of sdists (downloaded there when missing)")
    ap.add_argument("--verify", action="store_true", help="check every real task fails before, passes after")
    ap.add_argument("--tasks", nargs="*", help="names (default: all)")
    args = ap.parse_args(argv)
    chosen = [t for t in TASKS if not args.tasks or t.name in args.tasks]
    if args.sdists:
        for task in chosen:
            write_task(task, args.sdists.resolve())
    if args.verify:
        return 0 if all([verify(t) for t in chosen]) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
