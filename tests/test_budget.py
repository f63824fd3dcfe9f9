"""The first-prompt budget on a big module: the part the traceback names is shortened, never dropped,
the outline of the code under test is always there, and what was shown stays recorded exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentloop.edits.apply import apply_reply
from agentloop.run import budget, context, opening

CAP = 1500


def _labels_module() -> str:
    """A 1,000-line module like idna's core.py: small helpers, a digit-heavy 70-line `check_label`
    (a few thousand tokens on its own) whose bug is near its end, and helpers after it."""
    out = ['"""Labels."""', ""]
    for n in range(60):
        out += ["", f"def _helper_{n}(value):", f'    """Helper {n}."""', f"    return value + {n}", ""]
    out += ["", "def _unot(value):", "    return 'U+{:04X}'.format(value)", ""]
    out += ["", "class LabelError(Exception):", '    """A bad label."""', ""]
    out += ["", "def check_label(label):", '    """Raise LabelError when `label` holds a code point not allowed."""']
    for n in range(60):
        codes = ", ".join(f"0x{(n * 16 + k) * 37 % 65536:04X}" for k in range(12))
        out.append(f"    table_{n} = ({codes})")
    out += ["    for pos, ch in enumerate(label):",
            "        if ord(ch) > 0x7F and ord(ch) in table_3:",
            "            continue",
            "    raise LabelError('Codepoint {} not allowed at position {}'.format(_unot(ord(label[0])), 1))",
            "    return True", ""]
    for n in range(60, 130):
        out += ["", f"def _later_{n}(value):", f'    """Later helper {n}."""', f"    return value * {n}", ""]
    return "\n".join(out) + "\n"


TEST_LABELS = '''\
from labels import check_label, _unot, LabelError


def test_check_label():
    assert _unot(65) == "U+0041"
    assert check_label("abc")
'''


def _repo(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "labels.py").write_text(_labels_module())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_labels.py").write_text(TEST_LABELS)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    return tmp_path, run.stdout + run.stderr


def _fill(root: Path, output: str, cap: int | None = CAP) -> tuple[context.Finding, budget.Filled]:
    files = ["labels.py", "tests/test_labels.py"]
    found = context.find_context(root, [output], files)
    return found, budget.fill(found.parts, [output], files, fixed="You fix bugs. " * 40, cap=cap,
                              wholes=found.wholes)


def _raise_line(root: Path) -> int:
    lines = (root / "labels.py").read_text().splitlines()
    return next(n for n, t in enumerate(lines, 1) if "raise LabelError(" in t)


def test_the_function_the_traceback_names_is_shortened_around_its_line_not_dropped(tmp_path):
    root, output = _repo(tmp_path)
    line = _raise_line(root)
    assert f"labels.py:{line}" in output
    found, filled = _fill(root, output)
    named = next(p for p in found.parts if p.path == "labels.py" and p.kind == "lines" and p.start <= line <= p.end)
    assert budget._cost(named) > CAP  # too big for the whole budget on its own
    shown = [p for p in filled.parts if p.path == "labels.py" and p.kind == "lines" and p.start <= line <= p.end]
    assert shown, [p.label for p in filled.parts]
    part = shown[0]
    assert named.start < part.start and part.end - part.start >= 5  # a window, not the whole function
    text = (root / "labels.py").read_text().splitlines()
    assert part.text == "\n".join(text[part.start - 1:part.end])  # its title's line numbers are true
    assert part.label == f"labels.py lines {part.start}-{part.end} of {len(text):,}"
    assert "raise LabelError(" in part.text
    # the signature too, as a part of its own when the window does not reach it
    assert any(p.text.startswith("def check_label(label):") for p in filled.parts if p.kind == "lines")
    assert any("shortened to lines" in label for label in filled.left_out)
    assert filled.tokens <= CAP
    # without a cap the function is shown whole
    _, uncapped = _fill(root, output, cap=None)
    assert any(p.start == named.start and p.end == named.end for p in uncapped.parts)


def test_lower_value_parts_give_way_and_the_outline_is_always_kept(tmp_path):
    root, output = _repo(tmp_path)
    line = _raise_line(root)
    _, filled = _fill(root, output)
    kinds = [(p.path, p.kind) for p in filled.parts]
    assert ("labels.py", "outline") in kinds
    outline = next(p for p in filled.parts if p.kind == "outline")
    assert "def check_label(label):" in outline.text  # the rows nearest the shown lines
    assert budget.estimate_tokens(outline.text) < 400
    # a cap so tight that only a few lines fit: the outline is still there, shortened
    _, tight = _fill(root, output, cap=850)
    assert any(p.kind == "outline" and p.path == "labels.py" for p in tight.parts), tight.left_out
    assert tight.tokens <= 850
    assert any(p.kind == "lines" and p.path == "labels.py" and p.start <= line <= p.end for p in tight.parts)


def test_a_shortened_part_is_recorded_as_partial_and_a_whole_file_reply_to_it_is_refused(tmp_path):
    root, output = _repo(tmp_path)
    _, filled = _fill(root, output)
    partial = opening.partial_of(filled.parts)
    ranges = [f"{p.start}-{p.end}" for p in filled.parts if p.path == "labels.py" and p.kind == "lines"]
    total = len((root / "labels.py").read_text().splitlines())
    assert partial["labels.py"] == f"lines {', '.join(ranges)} of {total:,}"
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    before = (root / "labels.py").read_text()
    new = before.replace("raise LabelError('Codepoint", "return LabelError('Codepoint")
    result = apply_reply(root, f"labels.py\n```python\n{new}```\n", partial=partial)
    assert not result.applied and result.failures[0].reason == "malformed"
    assert f"shown only part of labels.py ({partial['labels.py']})" in result.failures[0].message
    assert (root / "labels.py").read_text() == before


def test_the_estimate_counts_digits_as_tokens():
    digits = "assert total([10, 20, 30]) == 60.25\n" * 20
    prose = "The price after a percentage discount is returned.\n" * 20
    # digit-heavy code costs more than prose of the same length (Qwen: ~2.8 against ~5 characters a token)
    assert budget.estimate_tokens(digits) / len(digits) > 1.4 * budget.estimate_tokens(prose) / len(prose)
    assert budget.estimate_tokens("") == 0


def test_trimmed_output_does_not_keep_lone_blank_lines_between_cuts():
    """A blank line kept between two runs left out made three markers where one says it all (seen on
    cachetools: `[... 26 lines left out ...]`, a blank, `[... 2 lines left out ...]`, a blank, ...)."""
    from agentloop.run.budget import _keep_lines

    lines = ["a" * 40] * 5 + [""] + ["b" * 40] * 3 + [""] + ["E   assert 1 == 2"] + ["x" * 40] * 4
    assert _keep_lines(lines, 12).split("\n") == ["[... 10 lines left out ...]", "E   assert 1 == 2",
                                                  "[... 4 lines left out ...]"]


def test_a_file_list_cut_at_its_maximum_is_recorded_as_left_out():
    """Past FILE_LIST_MAX names the list is cut even under no cap: the trajectory says so, as it does
    for a cut the cap makes."""
    from agentloop.run.budget import FILE_LIST_MAX, fill

    names = [f"pkg/m{i}.py" for i in range(FILE_LIST_MAX + 25)]
    filled = fill([], [], names, cap=None)
    assert len(filled.file_list.split("\n")) == FILE_LIST_MAX
    assert filled.left_out == [f"25 of the repository's {FILE_LIST_MAX + 25} file names"]
    capped = fill([], [], names, cap=200)
    assert len([x for x in capped.left_out if x.endswith("file names")]) == 1
