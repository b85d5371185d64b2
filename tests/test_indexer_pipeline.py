"""examples/indexer end to end: the four stages in a workpool.Pipeline, the command line,
reruns that skip what is indexed, and SIGTERM draining the run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import workpool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ is not an installed package

from examples.indexer.chunks import split  # noqa: E402
from examples.indexer.corpus import make_corpus  # noqa: E402
from examples.indexer.embed_server import EmbeddingService, embed_text  # noqa: E402
from examples.indexer.extract import Source, extract  # noqa: E402
from examples.indexer.pipeline import Settings, Summary, index  # noqa: E402
from examples.indexer.store import Store  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(workpool, "Pipeline"), reason="Pipeline not built yet")

BAD = {"damaged.pdf": "damaged PDF", "latin1.txt": "not UTF-8 text"}


def fast(url: str, **changes: object) -> Settings:
    """Settings for a test: a given service, no client-side pacing, small batches."""
    settings = Settings(embed_url=url, rate=1000.0, batch_size=8, batch_timeout=0.1)
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def failures(summary: Summary) -> dict[str, tuple[str, str]]:
    return {Path(p).name: (stage, message) for p, stage, message in summary.failed}


def stored(db: Path) -> dict[str, list[str]]:
    """{file name: its chunks' texts in order} of the documents recorded as indexed."""
    with Store(db, use_vec=False) as store:
        rows = store.conn.execute(
            "SELECT c.path, c.text FROM chunks c JOIN documents d USING (path, sha256) "
            "ORDER BY c.path, c.seq"
        ).fetchall()
        names = {Path(p).name for p in store.indexed()}
    out: dict[str, list[str]] = {name: [] for name in names}
    for path, text in rows:
        out[Path(path).name].append(text)
    return out


def test_index_query_and_rerun(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path / "docs", 12)
    db = tmp_path / "index.db"
    with EmbeddingService(latency=0.01, rate=500.0, burst=50) as service:
        first = index(tmp_path / "docs", db, fast(service.url))

        # One Result per document: the good ones recorded, each bad one failed alone in
        # stage 1 with its own error.
        assert first.indexed == 13  # 12 + the empty one (zero chunks)
        assert {n: s for n, (s, _) in failures(first).items()} == dict.fromkeys(BAD, "extract")
        for name, (_, message) in failures(first).items():
            assert BAD[name] in message
        assert first.interrupted is None

        # What was stored is the serial composition of the stages, chunk for chunk.
        expected = {
            p.name: [c.text for c in split(extract(Source.of(p)))]
            for p in paths
            if p.name not in BAD
        }
        assert stored(db) == expected
        assert first.chunks == sum(len(v) for v in expected.values())

        with Store(db, use_vec=False) as store:
            hits = store.search(embed_text("token bucket throttled requests retry"), k=3)
        assert all("rate-limits" in Path(h.path).name for h in hits)

        # Rerun: nothing new to do; the bad documents are tried (and fail) again.
        second = index(tmp_path / "docs", db, fast(service.url))
        assert (second.indexed, second.skipped, len(second.failed)) == (0, 13, 2)

        # A changed document is indexed again, and its old chunks are gone.
        changed = next(p for p in paths if p.suffix == ".md" and p.name != "empty.md")
        changed.write_text("# Rewritten\n\nSourdough needs a lively starter.\n")
        third = index(tmp_path / "docs", db, fast(service.url))
        assert (third.indexed, third.skipped) == (1, 12)
        assert stored(db)[changed.name] == ["# Rewritten Sourdough needs a lively starter."]


def test_throttling_by_the_service_is_absorbed_by_the_stages_retries(tmp_path: Path) -> None:
    make_corpus(tmp_path / "docs", 4, broken=False)
    db = tmp_path / "index.db"
    # The client does not pace itself and the service admits 5/s, one at a time: some
    # requests get 429 (however the stage groups or spreads its calls), and retries bring
    # every chunk through.
    with EmbeddingService(latency=0.0, rate=5.0, burst=1) as service:
        summary = index(tmp_path / "docs", db, fast(service.url, embed_workers=8, retries=30))
        counts = service.stats()
    assert (summary.indexed, summary.failed) == (4, [])
    assert counts["throttled"] > 0
    assert counts["served"] == summary.chunks
    assert summary.stats["embed"].retried == counts["throttled"]


def test_documents_whose_chunks_cannot_be_embedded_are_not_recorded(tmp_path: Path) -> None:
    make_corpus(tmp_path / "docs", 3)
    db = tmp_path / "index.db"
    with EmbeddingService() as service:
        url = service.url  # a port that nothing listens on once the service stopped
    summary = index(tmp_path / "docs", db, fast(url, retries=0))
    assert {n: s for n, (s, _) in failures(summary).items()} == {
        **dict.fromkeys(BAD, "extract"),
        **{p.name: "embed" for p in (tmp_path / "docs").glob("doc*")},
    }
    assert "ConnectError" in failures(summary)["doc0000-backpressure.pdf"][1]
    # Only the empty document (it has no chunk to embed) is recorded, and no chunk is left.
    assert stored(db) == {"empty.md": []}
    with Store(db, use_vec=False) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0


def test_what_cannot_be_a_document_fails_alone_in_the_listing(tmp_path: Path) -> None:
    # Found by an outside tester: a name that is not UTF-8 crashed every run of its folder
    # (SQLite stores names as text); a FIFO (or a symlink to /dev/zero) named *.txt hung
    # the listing, and the first SIGTERM with it; a folder that cannot be listed was
    # skipped without a word, exit 0.
    import os

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("sourdough bread needs a lively starter\n")
    bad_name = os.fsdecode(bytes(docs) + b"/caf\xe9.txt")
    with open(bad_name, "w") as f:
        f.write("valid text, a name that is not UTF-8\n")
    os.mkfifo(docs / "pipe.txt")
    (docs / "zero.txt").symlink_to("/dev/zero")
    # A folder whose path is longer than PATH_MAX cannot be listed (made step by step, by
    # descriptors: its full path is too long to name).
    fd = os.open(docs, os.O_RDONLY)
    for _ in range(20):
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    db = tmp_path / "index.db"
    with EmbeddingService(latency=0.0, rate=500.0, burst=50) as service:
        summary = index(docs, db, fast(service.url))
    assert summary.indexed == 1 and summary.interrupted is None
    by_stage = {(Path(p).name, stage) for p, stage, _ in summary.failed}
    assert {("caf\\xe9.txt", "list"), ("pipe.txt", "list"), ("zero.txt", "list")} <= by_stage
    messages = " ".join(message for _, _, message in summary.failed)
    assert "not valid UTF-8" in messages and "not a regular file" in messages
    assert "File name too long" in messages or "No such file" in messages  # the deep folder
    assert set(stored(db)) == {"good.txt"}


def test_a_second_indexer_on_the_same_database_is_refused(tmp_path: Path) -> None:
    # Two at once lost passages for good: the second pruned the first's chunks that were
    # stored and not recorded yet, and the first then recorded the document without them.
    import fcntl

    make_corpus(tmp_path / "docs", 2, broken=False)
    db = tmp_path / "index.db"
    with open(f"{db}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (what a running indexer holds)
        proc = subprocess.run(
            cli("index", str(tmp_path / "docs"), "--db", str(db), "--no-progress"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert "another indexer is running on this database" in proc.stderr
    assert "Traceback" not in proc.stderr
    with EmbeddingService(latency=0.0, rate=500.0, burst=50) as service:
        summary = index(tmp_path / "docs", db, fast(service.url))  # once it let go
    assert summary.indexed == 2


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "examples.indexer", *args]


def test_the_command_line_indexes_and_queries(tmp_path: Path) -> None:
    make_corpus(tmp_path / "docs", 6)
    db = str(tmp_path / "index.db")
    run = subprocess.run(
        cli("index", str(tmp_path / "docs"), "--db", db, "--latency", "0.01", "--stats"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr  # two documents failed
    assert "indexed 7 documents" in run.stdout and "2 failed" in run.stdout
    assert "failed  damaged.pdf [stage extract] ExtractionError:" in run.stderr
    assert "failed  latin1.txt [stage extract] ExtractionError:" in run.stderr
    assert "\x1b[" not in run.stderr  # the live view draws only on a terminal
    for stage in ("extract", "chunk", "embed", "store"):
        assert f"  {stage} " in run.stdout

    query = subprocess.run(
        cli("query", "rate limit with a token bucket", "--db", db, "-k", "2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert query.returncode == 0, query.stderr
    lines = query.stdout.splitlines()
    assert lines[0].startswith("1. ") and "rate-limits" in lines[0]
    assert lines[2].startswith("2. ")


@pytest.mark.timeout(180)
def test_sigterm_drains_the_run_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    # More documents than the pipeline's stages can hold at once (the sum of their
    # capacities, which bounds what it reads ahead): a drain must leave some unread.
    total = 400
    make_corpus(tmp_path / "docs", total)
    db = tmp_path / "index.db"
    args = (
        "index",
        str(tmp_path / "docs"),
        "--db",
        str(db),
        "--latency",
        "0.01",
        "--rate",
        "400",
        "--service-rate",
        "1000",
    )
    proc = subprocess.Popen(
        cli(*args, "--verbose"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first document recorded: the run is under way
        assert first.startswith("indexed "), first + proc.communicate(timeout=60)[1]
        proc.send_signal(signal.SIGTERM)
        # Read on through the same buffered stream: communicate() would read the pipe's file
        # descriptor directly and lose the lines readline() already buffered.
        out = proc.stdout.read()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = first + out
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted:" in err and "Run the same command again" in err

    # Every document that left the pipeline was recorded whole, and nothing else was.
    recorded = re.findall(r"^indexed (\S+) \(\d+ chunks?\)$", out, re.MULTILINE)
    with Store(db, use_vec=False) as store:
        docs = store.conn.execute("SELECT path, sha256, chunks FROM documents").fetchall()
        for path, sha, chunks in docs:
            n = store.conn.execute(
                "SELECT COUNT(*) FROM chunks WHERE path = ? AND sha256 = ?", (path, sha)
            ).fetchone()[0]
            assert n == chunks, path
        assert store.prune() == 0  # no chunk of a document that was not recorded
    assert sorted(Path(p).name for p, _, _ in docs) == sorted(recorded), (out, err)
    assert 0 < len(docs) < total  # stopped part way: intake stopped, the rest never read

    rerun = subprocess.run(cli(*args), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 1, rerun.stderr  # the two bad documents, again
    assert (
        f"indexed {total + 1 - len(docs)} documents" in rerun.stdout
        and f"skipped {len(docs)} already indexed" in rerun.stdout
    ), rerun.stdout
    with Store(db, use_vec=False) as store:
        assert len(store.indexed()) == total + 1
