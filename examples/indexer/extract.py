"""Stage 1: turn a document file into plain text.

This is the CPU-bound stage (PDF parsing is pure Python), so the pipeline runs it on worker
*processes*. Everything here is therefore plain data in, plain data out: a :class:`Source`
goes to the worker, a :class:`Document` comes back, and both pickle.

Supported kinds, by file suffix:

* ``.pdf`` -- text of every page, through pypdf;
* ``.html``/``.htm`` -- the visible text, through the standard library's ``html.parser``
  (``<script>``/``<style>`` dropped, block elements become line breaks);
* ``.txt``, ``.md``/``.markdown`` -- the file as UTF-8 text (Markdown is readable as it is).

A document that cannot be read raises :class:`ExtractionError` naming the file and what is
wrong with it. In the pipeline that becomes the document's failed ``Result`` (stage
``"extract"``); the other documents go on::

    >>> doc = extract(Source.of("notes/intro.md"))          # doctest: +SKIP
    >>> doc.kind, doc.text[:20]
    ('markdown', '# Introduction ...')
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["KINDS", "Document", "ExtractionError", "Source", "extract", "html_to_text"]

#: File suffix -> kind of document. Anything else is not a document to index.
KINDS = {
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
}


class ExtractionError(Exception):
    """A document could not be turned into text; the message names the file and the reason."""


@dataclass(frozen=True)
class Source:
    """A document to index: its path and the SHA-256 of its content when it was listed.

    The hash is what makes reruns cheap: a document whose ``(path, sha256)`` is already in
    the store is skipped, and one whose content changed is indexed again.
    """

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> Source:
        """Hash the file at ``path`` (streamed, constant memory). Raises ``OSError``."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
        return cls(str(path), digest.hexdigest())


@dataclass(frozen=True)
class Document:
    """The text of one document, with where it came from."""

    path: str
    sha256: str
    kind: str
    text: str


def extract(source: Source) -> Document:
    """Read ``source`` and return its text.

    Raises :class:`ExtractionError` when the file is missing, of an unknown kind, damaged
    (a PDF pypdf cannot parse), not UTF-8 (a text file), or changed since it was listed
    (its hash differs from ``source.sha256``: indexing it now would record the wrong
    version; the next run picks up the new one).
    """
    path = Path(source.path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise ExtractionError(f"{path}: unknown kind of document (suffixes indexed: {known})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExtractionError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise ExtractionError(f"{path}: changed while it was being indexed; run again")
    if kind == "pdf":
        text = _pdf_text(path, data)
    else:
        text = _utf8(path, data)
        if kind == "html":
            text = html_to_text(text)
    return Document(str(path), source.sha256, kind, text)


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise ExtractionError(
            f"{path}: not UTF-8 text (byte 0x{bad} at offset {exc.start}); "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) to index it"
        ) from exc


def _pdf_text(path: Path, data: bytes) -> str:
    # pypdf is imported here, not at the top, so that importing this module stays cheap
    # for the parent process, which never parses a PDF itself.
    import pypdf

    # pypdf logs its repair attempts ("EOF marker not found") before it raises: the
    # ExtractionError below says the same thing once, attached to the right document.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [page.extract_text() for page in reader.pages]
    except pypdf.errors.PyPdfError as exc:
        raise ExtractionError(f"{path}: damaged PDF ({type(exc).__name__}: {exc})") from exc
    return "\n\n".join(pages)


# Elements whose end starts a new line of text; everything else is inline.
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    ]
)
# Elements whose content is not text a reader sees.
_HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})


class _TextCollector(HTMLParser):
    """Collects the visible text of an HTML page (see :func:`html_to_text`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # &amp; arrives as "&"
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0  # depth inside hidden elements
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The text a reader sees on an HTML page: title first, then the body, one block a line.

    >>> html_to_text("<title>T</title><p>a &amp; b</p><script>x()</script><p>c</p>")
    'T\\na & b\\nc'
    """
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    title = " ".join("".join(collector.title).split())
    lines = (" ".join(line.split()) for line in "".join(collector.parts).splitlines())
    body = [line for line in lines if line]
    return "\n".join([title, *body] if title else body)
