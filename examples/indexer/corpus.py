"""A small corpus to index: PDFs, Markdown, HTML and text files, plus a few bad ones.

Each generated document is about one of a handful of topics (:data:`TOPICS`), so a search
for a topic's words finds that topic's documents. The PDFs are written with fpdf2 and read
back by the indexer with pypdf, like any PDF from elsewhere.

With ``broken=True`` the corpus also holds the documents real collections always have:

* ``damaged.pdf`` -- a PDF cut off half way (pypdf cannot parse it);
* ``latin1.txt`` -- a text file in Latin-1, not UTF-8;
* ``empty.md`` -- a document with no words (indexed, with zero chunks).

The first two must fail alone, each with a clear error, and never stop the run::

    python -m examples.indexer corpus /tmp/docs --documents 40
"""

from __future__ import annotations

import datetime
import html
import random
from pathlib import Path

__all__ = ["TOPICS", "make_corpus"]

#: topic -> sentences a document about it is made of.
TOPICS: dict[str, list[str]] = {
    "backpressure": [
        "Backpressure lets a slow consumer push back on a fast producer.",
        "A bounded queue between two stages blocks the producer when it is full.",
        "Without backpressure an unbounded buffer grows until the process runs out of memory.",
        "The slowest stage of a pipeline sets the pace of every stage before it.",
        "Reading the input lazily keeps memory constant however long the input is.",
    ],
    "rate limits": [
        "A token bucket refills at a steady rate and allows short bursts.",
        "An API that is called too fast answers with status 429 Too Many Requests.",
        "Clients should retry throttled requests with exponential backoff and jitter.",
        "The Retry-After header tells a client how many seconds to wait.",
        "Pacing requests below the server's limit avoids most throttled calls.",
    ],
    "pdf parsing": [
        "A PDF file is a collection of objects with a cross-reference table at its end.",
        "Text in a PDF is drawn by content streams, page by page.",
        "A truncated PDF has lost its trailer and cannot be parsed reliably.",
        "Extracting text from a PDF is pure computation and benefits from several processes.",
        "Fonts and encodings decide how the glyphs on a page map back to characters.",
    ],
    "vector search": [
        "An embedding maps a passage of text to a vector of numbers.",
        "Passages with similar meaning have embeddings with a high cosine similarity.",
        "A nearest neighbour query returns the stored vectors closest to the query vector.",
        "Brute force search compares the query with every stored vector.",
        "Chunking long documents into passages makes search results precise.",
    ],
    "gardening": [
        "Tomatoes need full sun and regular watering to ripen well.",
        "Compost improves the soil structure and feeds the earthworms.",
        "Prune roses in late winter before the new shoots appear.",
        "Mulch keeps the soil moist and suppresses weeds in summer.",
        "Sow lettuce every few weeks for a steady harvest.",
    ],
    "baking": [
        "Bread dough rises as yeast ferments the sugars in the flour.",
        "Knead the dough until it is smooth and springs back when pressed.",
        "A hot oven and steam give a loaf its crisp crust.",
        "Sourdough uses a starter of wild yeast and lactic bacteria.",
        "Let the bread cool on a rack before slicing it.",
    ],
}

_KINDS = ("pdf", "md", "html", "txt")
# Fixed, so that the same arguments make byte-identical PDFs (and the same content hashes).
_PDF_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def make_corpus(
    directory: str | Path, documents: int = 12, *, broken: bool = True, seed: int = 0
) -> list[Path]:
    """Write ``documents`` documents (cycling through PDF, Markdown, HTML and text) into
    ``directory`` (created if needed), plus the bad ones when ``broken``; return their paths.

    Deterministic: the same arguments write the same bytes.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = sorted(TOPICS)
    paths: list[Path] = []
    for n in range(documents):
        topic = names[n % len(names)]
        kind = _KINDS[n % len(_KINDS)]
        title = f"Notes on {topic}, part {n + 1}"
        paragraphs = [" ".join(rng.sample(TOPICS[topic], k=3)) for _ in range(rng.randint(2, 6))]
        path = folder / f"doc{n:04d}-{topic.replace(' ', '-')}.{kind}"
        _WRITERS[kind](path, title, paragraphs)
        paths.append(path)
    if broken:
        paths += _broken(folder)
    return paths


def _pdf(path: Path, title: str, paragraphs: list[str]) -> None:
    path.write_bytes(_pdf_bytes(title, paragraphs))


def _pdf_bytes(title: str, paragraphs: list[str]) -> bytes:
    from fpdf import FPDF  # only the corpus needs it, not the indexer

    pdf = FPDF()
    pdf.set_creation_date(_PDF_DATE)
    pdf.add_page()
    pdf.set_font("helvetica", style="B", size=14)
    pdf.multi_cell(0, 8, title)
    pdf.set_font("helvetica", size=11)
    for paragraph in paragraphs:
        pdf.ln(3)
        pdf.multi_cell(0, 6, paragraph)
    return bytes(pdf.output())


def _markdown(path: Path, title: str, paragraphs: list[str]) -> None:
    path.write_text(f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")


def _html(path: Path, title: str, paragraphs: list[str]) -> None:
    body = "\n".join(f"  <p>{html.escape(p)}</p>" for p in paragraphs)
    path.write_text(
        f"<!doctype html>\n<html><head><title>{html.escape(title)}</title>\n"
        "<style>p { margin: 1em }</style></head>\n"
        f"<body>\n  <h1>{html.escape(title)}</h1>\n{body}\n"
        "  <script>console.log('not text a reader sees')</script>\n</body></html>\n",
        encoding="utf-8",
    )


def _text(path: Path, title: str, paragraphs: list[str]) -> None:
    path.write_text(title + "\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")


_WRITERS = {"pdf": _pdf, "md": _markdown, "html": _html, "txt": _text}


def _broken(folder: Path) -> list[Path]:
    damaged = folder / "damaged.pdf"
    whole = _pdf_bytes("A damaged document", ["This PDF was cut off half way."])
    damaged.write_bytes(whole[: len(whole) // 2])
    latin1 = folder / "latin1.txt"
    latin1.write_bytes("Caf\u00e9 cr\u00e8me, written in Latin-1.\n".encode("latin-1"))
    empty = folder / "empty.md"
    empty.write_text("", encoding="utf-8")
    return [damaged, latin1, empty]
