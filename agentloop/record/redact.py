"""Mask secrets before anything reaches disk: values of secret-looking variables and key patterns.

Masked: the value of every environment variable whose name looks secret (SECRET_NAME: *API_KEY*,
*TOKEN*, *SECRET*, *PASSWORD*, credentials, ...), passed to checks or not; and anything shaped like
a known key (KEY_PATTERNS) or a PEM private key block, wherever it appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from agentloop.workspace.checks import SECRET_NAME

MASK = "[REDACTED]"
KEY_PATTERNS = re.compile(
    r"(sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----)"  # a PEM header: the block is masked whole (see PEM_BLOCK)
)
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S)
PEM_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@", re.I)  # https://user:pw@host


class Redactor:
    """Replaces known secret values and key-shaped strings with a mask."""

    def __init__(self, environ: Mapping[str, str] | None = None, extra: tuple[str, ...] = ()):
        environ = os.environ if environ is None else environ
        values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
        values.update(v for v in extra if v and len(v) >= 6)
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted(values, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        if "PRIVATE KEY-----" in value:
            value = PEM_BLOCK.sub(MASK, value)
        if "://" in value:
            value = URL_PASSWORD.sub(rf"\1{MASK}@", value)
        return KEY_PATTERNS.sub(MASK, value)

    def stream(self) -> Callable[[str], str]:
        """A redactor for text arriving in whole lines, which also masks the body of a PEM private
        key split over many pieces (the state is whether we are inside such a block)."""
        inside = False

        def redact(text: str) -> str:
            nonlocal inside
            if not inside and "PRIVATE KEY-----" not in text:
                return self.text(text)
            out = []
            for line in text.splitlines(keepends=True):
                if inside:
                    inside = not PEM_END.search(line)
                    out.append(MASK + ("\n" if line.endswith("\n") else ""))
                    continue
                if "PRIVATE KEY-----" in line and "-----BEGIN" in line and not PEM_END.search(line):
                    inside = True
                out.append(self.text(line))
            return "".join(out)

        return redact

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
