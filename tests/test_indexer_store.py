"""examples/indexer, stage 4 and search: the SQLite store, with and without sqlite-vec."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ is not an installed package

from examples.indexer.chunks import Chunk  # noqa: E402
from examples.indexer.embed_client import Embedded  # noqa: E402
from examples.indexer.embed_server import embed_text  # noqa: E402
from examples.indexer.extract import Source  # noqa: E402
from examples.indexer.store import Store, StoreWriter, vec_available  # noqa: E402

NO_VEC = (
    "this Python's sqlite3 cannot load extensions (the last test runs these elsewhere if it can)"
)
SEARCHES = [
    pytest.param(False, id="brute-force"),
    pytest.param(
        True, id="sqlite-vec", marks=pytest.mark.skipif(not vec_available(), reason=NO_VEC)
    ),
]

PASSAGES = {
    "a.txt": ["token bucket rate limit", "retry after a throttled request"],
    "b.md": ["knead the bread dough for the oven", "bake the loaf in a hot oven"],
    "c.html": ["bounded queues give backpressure"],
}


def source(path: str, version: int = 1) -> Source:
    return Source(path, f"{version:064x}")


def embedded(path: str, texts: list[str], version: int = 1) -> list[Embedded]:
    src = source(path, version)
    return [
        Embedded(Chunk(path, src.sha256, i, t), tuple(embed_text(t))) for i, t in enumerate(texts)
    ]


def fill(store: Store) -> None:
    for path, texts in PASSAGES.items():
        store.add(embedded(path, texts))
        store.mark_indexed(source(path), len(texts))


@pytest.fixture(params=SEARCHES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s = Store(tmp_path / "index.db", use_vec=request.param)
    request.addfinalizer(s.close)
    return s


def test_search_finds_the_nearest_chunks_best_first(store: Store) -> None:
    fill(store)
    hits = store.search(embed_text("bake the loaf in a hot oven"), k=2)
    assert [(h.path, h.seq) for h in hits] == [("b.md", 1), ("b.md", 0)]
    assert hits[0].text == "bake the loaf in a hot oven"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score > hits[1].score
    assert len(store.search(embed_text("anything"), k=50)) == 5
    assert store.counts() == (3, 5)


def test_a_passage_or_query_with_no_content_words_scores_zero(store: Store) -> None:
    # It embeds to a zero vector, whose cosine distance sqlite-vec gives as NULL: the search
    # failed with a TypeError (an outside tester's finding); the brute force scored it 0.
    fill(store)
    store.add(embedded("stop.txt", ["the and of to in is"]))
    store.mark_indexed(source("stop.txt"), 1)
    hits = store.search(embed_text("bake the loaf in a hot oven"), k=6)
    assert hits[0].text == "bake the loaf in a hot oven"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.score for h in hits if h.path == "stop.txt"] == [0.0]
    assert all(h.score == 0.0 for h in store.search(embed_text("the ???"), k=3))


def test_chunks_of_a_document_not_yet_recorded_are_never_found(store: Store) -> None:
    fill(store)
    store.add(embedded("d.txt", ["bake the loaf in a hot oven"]))  # not marked indexed
    assert all(h.path != "d.txt" for h in store.search(embed_text("bake the loaf"), k=10))
    assert store.counts() == (3, 5)


def test_indexed_lists_what_reruns_skip(store: Store) -> None:
    fill(store)
    assert store.indexed() == {p: source(p).sha256 for p in PASSAGES}


def test_a_new_version_of_a_document_replaces_the_old_ones_chunks(store: Store) -> None:
    fill(store)
    store.add(embedded("a.txt", ["completely new text"], version=2))
    store.mark_indexed(source("a.txt", 2), 1)
    assert store.indexed()["a.txt"] == source("a.txt", 2).sha256
    assert store.counts() == (3, 4)
    top = store.search(embed_text("token bucket rate limit"), k=5)
    assert [h.text for h in top if h.path == "a.txt"] == ["completely new text"]


def test_a_failed_document_leaves_no_chunks_but_an_indexed_version_stays(store: Store) -> None:
    fill(store)
    store.add(embedded("d.txt", ["half of a document"]))
    store.forget(source("d.txt"))
    store.forget(source("a.txt"))  # the indexed version: untouched
    rows = store.conn.execute("SELECT path FROM chunks ORDER BY path").fetchall()
    assert [r[0] for r in rows] == ["a.txt", "a.txt", "b.md", "b.md", "c.html"]


def test_prune_drops_what_a_killed_run_left(store: Store) -> None:
    fill(store)
    store.add(embedded("d.txt", ["half of a document", "and more"]))
    assert store.prune() == 2
    assert store.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 5


def test_storing_a_chunk_again_replaces_it(store: Store) -> None:
    fill(store)
    store.add(embedded("a.txt", ["token bucket rate limit, revised"]))
    assert store.counts() == (3, 5)
    assert store.search(embed_text("revised"), k=1)[0].text == "token bucket rate limit, revised"


def test_the_store_writer_is_a_sink_batch_function(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    writer = StoreWriter(db, use_vec=False)
    # A sink: it returns None, so its items pass on unchanged (checked here at run time too).
    assert writer(embedded("a.txt", PASSAGES["a.txt"])) is None  # type: ignore[func-returns-value]
    with Store(db, use_vec=False) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 2


def test_vectors_of_another_length_are_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "index.db", use_vec=False) as store:
        wrong = Embedded(Chunk("a.txt", "0" * 64, 0, "x"), (1.0, 0.0))
        with pytest.raises(ValueError, match="vector of length 2, this index holds 256"):
            store.add([wrong])
        with pytest.raises(ValueError, match="query vector of length 2"):
            store.search([1.0, 0.0])
    with pytest.raises(ValueError, match="holds vectors of length 256, not 8"):
        Store(tmp_path / "index.db", dim=8, use_vec=False)


# The sqlite-vec runs above need a Python whose sqlite3 can load extensions. The one running
# the suite may lack it (pyenv builds often do) while the system's Python on the same machine
# has it: then this test runs them there, on this checkout and this venv's packages.
def interpreter_with_vec() -> str | None:
    system = "/usr/bin/python3"
    if vec_available() or not os.path.exists(system):
        return None
    probe = (
        "import sys, sqlite3; "
        f"assert sys.version_info[:2] == {tuple(sys.version_info[:2])}; "
        "sqlite3.connect(':memory:').enable_load_extension(True)"
    )
    ok = subprocess.run([system, "-c", probe], capture_output=True).returncode == 0
    return system if ok else None


@pytest.mark.skipif(
    interpreter_with_vec() is None,
    reason="the sqlite-vec runs above ran here, or no other Python of this version can load it",
)
def test_the_sqlite_vec_runs_pass_under_a_python_that_can_load_it() -> None:
    python = interpreter_with_vec()
    assert python is not None
    paths = [str(ROOT), str(ROOT / "src"), sysconfig.get_paths()["purelib"]]
    done = subprocess.run(
        [python, "-m", "pytest", __file__, "-q", "-k", "sqlite-vec"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed, \d+ deselected in ", summary), summary
