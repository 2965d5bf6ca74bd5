"""Catalogue text shown as text: never as Markdown, links, images, HTML or LaTeX.

Every string that comes from a catalogue, a CSV, a zip, an upload or a file name goes through
:func:`plain` before it reaches an element that renders Markdown (``st.markdown``,
``st.caption``, ``st.error``, image captions, ``st.progress`` text). A product named
``![x](http://host/t.png)`` would otherwise make every visitor's browser fetch that URL.
Tables (``st.dataframe``), charts and widget options show their values as text already.
"""

from __future__ import annotations

import re
import string

#: CommonMark lets a backslash escape any ASCII punctuation, and Streamlit's directives
#: (``:red[..]``, ``:material/x:``, LaTeX between ``$``) are made of punctuation too.
_SPECIAL = frozenset(string.punctuation)
#: GitHub-flavoured Markdown turns ``http://...``, ``www.x`` and ``a@b.c`` in text into links
#: after escapes are undone; an invisible word joiner inside each keeps them text.
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """``text`` escaped so that Markdown shows it character for character.

    Whitespace runs (newlines included) become one space, so a value cannot start a new
    Markdown block (a heading, a list, a table, a code fence). A URL or e-mail address gets an
    invisible word joiner (U+2060) after its ``:``, ``www`` or ``@``, so it is not made a link.

    Args:
        text: Any value; it is shown as ``str(text)``.

    Returns:
        Markdown source that renders as the text itself.
    """
    unlinked = _AUTOLINK.sub(WORD_JOINER, " ".join(str(text).split()))
    return "".join("\\" + c if c in _SPECIAL else c for c in unlinked)


def bold(text: object) -> str:
    """``text`` as bold Markdown, escaped (empty text gives ``""``, never a stray ``****``)."""
    inner = plain(text)
    return f"**{inner}**" if inner else ""


def shorten(text: object, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with ``…`` when cut.

    Args:
        text: Any value; it is shown as ``str(text)`` with its whitespace collapsed.
        limit: The longest result, in characters (at least 2).

    Returns:
        Plain (unescaped) text; pass it through :func:`plain` before Markdown shows it.
    """
    if limit < 2:
        raise ValueError(f"`limit` must be >= 2. Received: limit={limit}")
    words = " ".join(str(text).split())
    if len(words) <= limit:
        return words
    cut = words[: limit - 1]
    if words[limit - 1] != " " and " " in cut[limit // 2:]:  # cut in a word: drop the part
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"
