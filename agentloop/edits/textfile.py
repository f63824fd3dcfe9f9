"""A text file as lines, remembering how it was written so an edit changes nothing else.

Newline style (per line, CRLF stays CRLF), encoding (UTF-8 with or without BOM, UTF-16 with BOM,
else Latin-1), and whether the file ends with a newline all survive a round trip byte for byte.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from agentloop.files import looks_binary


class BinaryFile(ValueError):
    """The file holds bytes no text edit should touch."""


_BOMS = [
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


@dataclass
class TextFile:
    lines: list[str] = field(default_factory=list)  # contents, without line endings
    endings: list[str] = field(default_factory=list)  # "\n" or "\r\n" per line ("" for a last line without)
    newline: str = "\n"  # the dominant style, used for new lines
    encoding: str = "utf-8"
    bom: bytes = b""
    final_newline: bool = True

    @classmethod
    def decode(cls, data: bytes) -> TextFile:
        bom = b""
        enc = None
        for mark, name in _BOMS:
            if data.startswith(mark):
                bom, enc = mark, name
                break
        body = data[len(bom) :]
        if enc is None:
            if looks_binary(body):
                raise BinaryFile("binary file (it contains NUL bytes)")
            try:
                text = body.decode("utf-8")
                enc = "utf-8"
            except UnicodeDecodeError:
                text = body.decode("latin-1")
                enc = "latin-1"
        else:
            try:
                text = body.decode(enc)
            except UnicodeDecodeError:
                raise BinaryFile(f"file does not decode as {enc} despite its byte-order mark") from None
        return cls.from_text(text, encoding=enc, bom=bom)

    @classmethod
    def from_text(cls, text: str, *, encoding: str = "utf-8", bom: bytes = b"") -> TextFile:
        parts = text.split("\n")
        final = text.endswith("\n") or text == ""
        if final:
            parts.pop()
        if "\r" not in text:  # the common case, kept fast for big files
            endings = ["\n"] * len(parts)
            if parts and not final:
                endings[-1] = ""
            return cls(parts, endings, "\n", encoding, bom, final)
        lines, endings = [], []
        for k, p in enumerate(parts):
            last = k == len(parts) - 1
            if p.endswith("\r") and not (last and not final):
                lines.append(p[:-1])
                endings.append("\r\n")
            else:
                lines.append(p)
                endings.append("" if last and not final else "\n")
        crlf = endings.count("\r\n")
        newline = "\r\n" if crlf > len(endings) - crlf - (0 if final else 1) and crlf else "\n"
        return cls(lines, endings, newline, encoding, bom, final)

    def splice(self, start: int, end: int, new: list[str]) -> None:
        """Replace lines [start, end) with `new`; new lines take the file's dominant newline."""
        self.lines[start:end] = new
        self.endings[start:end] = [self.newline] * len(new)

    def encode(self) -> bytes:
        n = len(self.lines)
        if n and self.newline == "\n" and "\r\n" not in self.endings:  # fast path: plain LF file
            body = "\n".join(self.lines) + ("\n" if self.final_newline else "")
            return self.bom + body.encode(self.encoding)
        out = []
        n = len(self.lines)
        for k, (ln, e) in enumerate(zip(self.lines, self.endings, strict=True)):
            if k == n - 1:
                e = (e or self.newline) if self.final_newline else ""
            else:
                e = e or self.newline
            out.append(ln + e)
        return self.bom + "".join(out).encode(self.encoding)

    def text(self) -> str:
        return "".join(ln + "\n" for ln in self.lines)


def split_lines(text: str) -> list[str]:
    """A model's block of text as lines (its own newline style does not matter)."""
    text = text.replace("\r\n", "\n")
    if not text:
        return []
    if text.endswith("\n"):  # "\n" is one blank line, "" is none
        text = text[:-1]
    return text.split("\n")
