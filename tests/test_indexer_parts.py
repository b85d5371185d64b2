"""examples/indexer, stages 1 and 2 and the corpus: extraction, chunking, listing sources."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

import workpool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ is not an installed package

from examples.indexer.chunks import Chunk, split  # noqa: E402
from examples.indexer.corpus import TOPICS, make_corpus  # noqa: E402
from examples.indexer.extract import (  # noqa: E402
    Document,
    ExtractionError,
    Source,
    extract,
    html_to_text,
)
from examples.indexer.pipeline import Summary, index, sources  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"), 8)


def test_every_kind_of_generated_document_extracts_to_its_text(corpus: list[Path]) -> None:
    good = [p for p in corpus if p.name.startswith("doc")]
    assert {p.suffix for p in good} == {".pdf", ".md", ".html", ".txt"}
    for path in good:
        doc = extract(Source.of(path))
        assert (
            doc.kind
            == {"pdf": "pdf", "md": "markdown", "html": "html", "txt": "text"}[path.suffix[1:]]
        )
        topic = path.stem.split("-", 1)[1].replace("-", " ")
        assert f"Notes on {topic}" in doc.text
        # Every sentence of the document comes from its topic, whatever the format.
        words = set(doc.text.split())
        assert words & set(" ".join(TOPICS[topic]).split())


def test_the_corpus_is_deterministic(tmp_path: Path) -> None:
    first = make_corpus(tmp_path / "a", 4)
    second = make_corpus(tmp_path / "b", 4)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_damaged_pdf_fails_with_a_clear_error_that_crosses_processes(corpus: list[Path]) -> None:
    damaged = next(p for p in corpus if p.name == "damaged.pdf")
    with pytest.raises(ExtractionError) as caught:
        extract(Source.of(damaged))
    assert str(damaged) in str(caught.value)
    assert "damaged PDF" in str(caught.value)
    # Stage 1 runs on worker processes: the error must come back whole.
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is ExtractionError and str(again) == str(caught.value)


def test_a_text_file_that_is_not_utf8_fails_with_where_and_how_to_fix_it(
    corpus: list[Path],
) -> None:
    latin1 = next(p for p in corpus if p.name == "latin1.txt")
    with pytest.raises(ExtractionError, match=r"not UTF-8 text \(byte 0xe9 at offset 3\)"):
        extract(Source.of(latin1))


def test_an_empty_document_has_no_text_and_no_chunks(corpus: list[Path]) -> None:
    empty = next(p for p in corpus if p.name == "empty.md")
    doc = extract(Source.of(empty))
    assert doc.text == ""
    assert split(doc) == []


def test_a_file_changed_since_it_was_listed_is_not_indexed_as_the_old_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first version")
    source = Source.of(path)
    path.write_text("second version")
    with pytest.raises(ExtractionError, match="changed while it was being indexed"):
        extract(source)


def test_missing_files_and_unknown_kinds_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="cannot read it"):
        extract(Source(str(tmp_path / "gone.txt"), ""))
    odd = tmp_path / "data.bin"
    odd.write_bytes(b"\0")
    with pytest.raises(ExtractionError, match=r"unknown kind of document \(suffixes indexed: "):
        extract(Source.of(odd))


def test_html_gives_the_text_a_reader_sees() -> None:
    page = (
        "<html><head><title>The  Title</title><style>p {color: red}</style></head>"
        "<body><h1>Head</h1><p>one &amp; <b>two</b></p><script>alert('x')</script>"
        "<ul><li>three</li><li>four</li></ul></body></html>"
    )
    assert html_to_text(page) == "The Title\nHead\none & two\nthree\nfour"


def doc(text: str) -> Document:
    return Document("d.txt", "f" * 64, "text", text)


def test_chunks_are_overlapping_windows_that_cover_every_word() -> None:
    words = [f"w{i}" for i in range(23)]
    chunks = split(doc(" \n ".join(words)), size=10, overlap=3)
    assert [c.text.split() for c in chunks] == [words[0:10], words[7:17], words[14:23]]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert all(c.path == "d.txt" and c.sha256 == "f" * 64 for c in chunks)


def test_a_text_that_fits_one_window_is_one_chunk() -> None:
    assert split(doc("a b c"), size=3, overlap=2) == [Chunk("d.txt", "f" * 64, 0, "a b c")]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (5, 5), (5, -1)])
def test_windows_that_would_not_advance_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="0 <= overlap < size"):
        split(doc("a b c"), size=size, overlap=overlap)


def test_sources_lists_documents_lazily_and_skips_those_already_indexed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.md", "a.txt", "sub/c.html", "notes.bin"):
        (tmp_path / name).write_text(name)
    listed = [Source.of(tmp_path / n) for n in ("a.txt", "b.md", "sub/c.html")]
    summary = Summary()
    assert list(sources(tmp_path, {}, summary)) == listed

    known = {listed[0].path: listed[0].sha256, listed[1].path: "an older version's hash"}
    todo = sources(tmp_path, known, summary)
    assert next(todo) == listed[1]  # changed since it was indexed: indexed again
    assert summary.skipped == 1
    assert list(todo) == [listed[2]]


def test_extraction_runs_on_worker_processes_and_a_bad_document_fails_alone(
    corpus: list[Path],
) -> None:
    with workpool.Pool(workers=2, backend="process") as pool:
        results = list(pool.results(extract, [Source.of(p) for p in corpus], ordered=True))
    failed = {Path(r.item.path).name: r.error for r in results if not r.ok}
    assert set(failed) == {"damaged.pdf", "latin1.txt"}
    assert all(isinstance(e, ExtractionError) for e in failed.values())
    assert "damaged PDF" in str(failed["damaged.pdf"])
    for r in results:
        if r.ok:
            assert r.value == extract(r.item)  # the same Document as in this process


def test_the_indexer_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        index(tmp_path / "nothing", tmp_path / "index.db")
    assert not (tmp_path / "index.db").exists()  # refused before anything was created
