"""An exception's text, for the end of sbrun's one-line messages."""
from __future__ import annotations

from typing import Optional


def one_line(err: BaseException, lines: Optional[int] = 1, limit: Optional[int] = None) -> str:
    """`err`'s first `lines` non-blank lines (None: all of them) as one line, runs of whitespace
    collapsed, at most `limit` characters ("..." marks a cut); the exception's type name when it
    has no text."""
    kept = [ln for ln in str(err).splitlines() if ln.strip()]
    text = " ".join(" ".join(kept[:lines]).split()) or type(err).__name__
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    return text
