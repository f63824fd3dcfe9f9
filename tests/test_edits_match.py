"""The matching ladder: each rung forgives one kind of mistake, and never places an edit wrongly."""

from __future__ import annotations

from agentloop.edits.match import Found, Refused, locate

FILE = [
    "class Wrapper:",
    "    def wrap(self, text):",
    '        """Wrap text."""',
    "        lines = []",
    "",
    "        for chunk in text.split():",
    "            lines.append(chunk)",
    "        return lines",
    "",
    "    def fill(self, text):",
    '        return "\\n".join(self.wrap(text))',
]


def apply(found: Found | Refused, lines: list[str] = FILE) -> list[str]:
    assert isinstance(found, Found), found
    return lines[: found.start] + found.new_lines + lines[found.end :]


def test_exact() -> None:
    res = locate(FILE, ["        return lines"], ["        return list(lines)"])
    assert apply(res)[7] == "        return list(lines)" and res.rung == "exact"


def test_indentation_shift_reindents_replacement() -> None:
    search = ["for chunk in text.split():", "    lines.append(chunk)"]
    replace = ["for chunk in text.split():", "    if chunk:", "        lines.append(chunk)"]
    res = locate(FILE, search, replace)
    assert isinstance(res, Found) and res.rung == "indentation shifted"
    assert apply(res)[5:8] == [
        "        for chunk in text.split():",
        "            if chunk:",
        "                lines.append(chunk)",
    ]


def test_non_uniform_indentation_is_not_forgiven() -> None:
    search = ["for chunk in text.split():", "lines.append(chunk)"]
    assert isinstance(locate(FILE, search, ["x"]), Refused)


def test_blank_lines_ignored_keeps_file_blanks() -> None:
    search = ["        lines = []", "        for chunk in text.split():", "            lines.append(chunk)"]
    replace = [
        "        lines = []",
        "        for chunk in text.split():",
        "            lines.append(chunk.upper())",
    ]
    res = locate(FILE, search, replace)
    assert isinstance(res, Found) and res.rung == "blank lines ignored"
    out = apply(res)
    assert out[3:7] == [
        "        lines = []",
        "",
        "        for chunk in text.split():",
        "            lines.append(chunk.upper())",
    ]


def test_blank_line_next_to_insertion_is_refused() -> None:
    search = ["        lines = []", "        for chunk in text.split():"]
    replace = ["        lines = []", "        n = 0", "        for chunk in text.split():"]
    res = locate(FILE, search, replace)
    assert isinstance(res, Refused) and res.reason == "ambiguous"


def test_elision() -> None:
    search = ["    def wrap(self, text):", "        ...", "        return lines"]
    replace = ["    def wrap(self, text):", "        ...", "        return tuple(lines)"]
    res = locate(FILE, search, replace)
    assert isinstance(res, Found)
    assert apply(res) == FILE[:7] + ["        return tuple(lines)"] + FILE[8:]


def test_unicode_punctuation() -> None:
    search = ["        \u201c\u201c\u201cWrap text.\u201d\u201d\u201d"]
    replace = ["        \u201c\u201c\u201cWrap some text.\u201d\u201d\u201d"]
    res = locate(FILE, search, replace)
    assert isinstance(res, Found) and res.rung.startswith("Unicode")
    assert apply(res)[2] == '        """Wrap some text."""'


def test_ambiguous_without_hint_and_hint_picks() -> None:
    lines = ["a", "b", "x"] + ["pad"] * 50 + ["a", "b", "y"]
    res = locate(lines, ["a", "b"], ["a", "c"])
    assert isinstance(res, Refused) and res.reason == "ambiguous" and res.candidates == [1, 54]
    res = locate(lines, ["a", "b"], ["a", "c"], hint=52)
    assert isinstance(res, Found) and res.start == 53
    res = locate(lines, ["a", "b"], ["a", "c"], hint=27)  # halfway: no single candidate
    assert isinstance(res, Refused)


def test_already_applied() -> None:
    res = locate(FILE, ["        return line"], ["        return lines"])
    assert isinstance(res, Refused) and res.reason == "already_applied"


def test_not_found_shows_closest_lines() -> None:
    res = locate(FILE, ["    def fill(self, txt):", '        return "\\n".join(self.wrap(txt))'], ["x"])
    assert isinstance(res, Refused) and res.reason == "not_found"
    assert "   10 |     def fill(self, text):" in res.message


def test_anchor_and_eof() -> None:
    lines = ["def a():", "    return 1", "def b():", "    return 1"]
    res = locate(lines, ["    return 1"], ["    return 2"], anchor="def b():")
    assert isinstance(res, Found) and res.start == 3
    res = locate(lines, ["    return 1"], ["    return 2"], at_eof=True)
    assert isinstance(res, Found) and res.start == 3


# -- a search that skips blank lines, a replace that keeps them: each file line comes out once ------
def test_blank_line_search_drops_and_replace_keeps_comes_out_once() -> None:
    lines = ["A = 1", "", "B = 2"]
    res = locate(lines, ["A = 1", "B = 2"], ["A = 3", "", "B = 2"])
    assert isinstance(res, Found) and res.rung == "blank lines ignored"
    assert apply(res, lines) == ["A = 3", "", "B = 2"]


def test_whitespace_only_blank_line_kept_by_replace_comes_out_once() -> None:
    lines = ["def f():", "    a = 1", "    ", "    return a"]
    res = locate(lines, ["    a = 1", "    return a"], ["    a = 2", "", "    return a"])
    assert apply(res, lines) == ["def f():", "    a = 2", "    ", "    return a"]


def test_blank_runs_kept_by_replace_with_insertion_and_trailing_spaces() -> None:
    lines = ["x = 1", "", "", "def g():", "    return 2", "", "y = 3"]
    search = ["x = 1  ", "def g():  ", "    return 2  ", "y = 3  "]
    replace = ["x = 1  ", "", "", "def g():  ", "    z = 0", "    return 2  ", "", "y = 3  "]
    res = locate(lines, search, replace)
    assert apply(res, lines) == ["x = 1", "", "", "def g():", "    z = 0", "    return 2", "", "y = 3"]


def test_replace_that_drops_a_skipped_blank_next_to_new_lines_is_still_refused() -> None:
    lines = ["A = 1", "", "B = 2"]
    res = locate(lines, ["A = 1", "B = 2"], ["A = 1", "X = 0", "B = 2"])
    assert isinstance(res, Refused) and res.reason == "ambiguous"


def test_blank_line_outside_search_next_to_added_lines_is_refused_not_guessed() -> None:
    # File ends `v12, ""`; SEARCH `v12`; REPLACE `v12, w0, ""`. The blank line may be REPLACE's last
    # line (`v12, w0, ""`) or one both texts left out (`v12, "", w0, ""`): refused, never guessed.
    file = ["v11 = 11", "v12 = 12", ""]
    res = locate(file, ["v12 = 12"], ["v12 = 12", "w0 = 0", ""])
    assert isinstance(res, Refused) and res.reason == "ambiguous", res
    assert "blank line 3" in res.message
    # REPLACE's blank line right after the kept line stands for the file's: one reading, applied.
    res = locate(file, ["v12 = 12"], ["v12 = 12", "", "w0 = 0", ""])
    assert apply(res, file) == ["v11 = 11", "v12 = 12", "", "w0 = 0", ""]
    # A trailing blank line kept after a modified last line: applied, the blank line once.
    res = locate(file, ["v12 = 12"], ["v12 = 12  # edited", ""])
    assert apply(res, file) == ["v11 = 11", "v12 = 12  # edited", ""]
    # The same at the head: file `"", v3`, SEARCH `v3`, REPLACE `"", w0, v3`.
    file = ["", "v3 = 3", "v4 = 4"]
    res = locate(file, ["v3 = 3"], ["", "w0 = 0", "v3 = 3"])
    assert isinstance(res, Refused) and res.reason == "ambiguous", res


def test_moving_a_blank_line_the_file_does_not_have_is_refused() -> None:
    # Hypothesis counterexample: file `a`, SEARCH `a, ""`, REPLACE `"", a` added a blank line.
    res = locate(["a = 1"], ["a = 1", ""], ["", "a = 1"])
    assert isinstance(res, Refused) and res.reason == "ambiguous", res
    assert "does not have" in res.message
