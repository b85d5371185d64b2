"""Stage 2: split a document's text into overlapping chunks of words.

An embedding describes a passage, not a book: a query should find the paragraph that answers
it. So each document is cut into windows of ``size`` words that overlap by ``overlap`` words
(a sentence cut at a window's edge still appears whole in its neighbour).

In the pipeline this is a ``flat=True`` stage: :func:`split` returns a *list* of chunks and
each chunk goes on to the embedding stage as its own item. A document with no text returns
an empty list, so it produces no chunk at all (it is still recorded as indexed)::

    >>> from examples.indexer.extract import Document
    >>> doc = Document("a.txt", "0" * 64, "text", "one two three four five")
    >>> [c.text for c in split(doc, size=3, overlap=1)]
    ['one two three', 'three four five']
"""

from __future__ import annotations

from dataclasses import dataclass

from .extract import Document

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_SIZE", "Chunk", "split"]

DEFAULT_SIZE = 120
DEFAULT_OVERLAP = 20


@dataclass(frozen=True)
class Chunk:
    """Passage number ``seq`` (0-based) of the document at ``path`` with content ``sha256``."""

    path: str
    sha256: str
    seq: int
    text: str


def split(doc: Document, size: int = DEFAULT_SIZE, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """Cut ``doc.text`` into chunks of at most ``size`` words, consecutive ones sharing
    ``overlap`` words. Whitespace is normalised to single spaces.

    Raises ``ValueError`` unless ``size >= 1`` and ``0 <= overlap < size`` (otherwise the
    windows would not advance).
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got {size=} {overlap=}")
    words = doc.text.split()
    step = size - overlap
    chunks: list[Chunk] = []
    start = 0
    while start < len(words):
        window = words[start : start + size]
        chunks.append(Chunk(doc.path, doc.sha256, len(chunks), " ".join(window)))
        if start + size >= len(words):
            break  # this window reached the end: another would only repeat its tail
        start += step
    return chunks
