"""The indexer's command line: ``python -m examples.indexer COMMAND ...`` (from the repo root).

Commands:

* ``index DIR --db FILE`` -- index the documents under DIR (skipping those already indexed);
* ``query TEXT --db FILE`` -- print the chunks nearest to TEXT;
* ``serve [--port N]`` -- run the embedding service on its own (to share it between runs,
  point ``index``/``query`` at it with ``--embed-url``);
* ``corpus DIR`` -- write a demo corpus to DIR.

Exit status of ``index``: 0 when every document was indexed, 1 when some failed (each is
listed on standard error with its stage and error), 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM) when a signal stopped it after draining.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import workpool

from .pipeline import IndexerBusy, Settings, Summary, index


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, workpool.ConfigError, IndexerBusy, FileExistsError) as e:
        # A bad option or folder, another indexer on the database: said in a line, as a
        # usage error (exit 2), not a traceback that exit 1 ("some failed") would follow.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:
        print(f"error: {getattr(args, 'db', '')}: not a usable index ({e})", file=sys.stderr)
        return 2


def _index(args: argparse.Namespace) -> int:
    settings = Settings(
        embed_url=args.embed_url,
        latency=args.latency,
        service_rate=args.service_rate,
        rate=args.rate,
        extract_workers=args.extract_workers,
        embed_workers=args.embed_workers,
        request_timeout=args.timeout,
        retries=args.retries,
        batch_size=args.batch_size,
        use_vec=False if args.no_vec else None,
        progress=not args.no_progress,
    )
    root = Path(args.dir).resolve()

    def shown(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(root)) if p.is_relative_to(root) else path

    def each(r: workpool.Result[Any]) -> None:
        if args.verbose and r.ok:
            n = len(r.value or [])
            print(f"indexed {shown(r.item.path)} ({n} chunk{'' if n == 1 else 's'})", flush=True)

    summary = index(root, args.db, settings, on_result=each)
    for path, stage, message in summary.failed:
        print(f"failed  {shown(path)} [stage {stage}] {message}", file=sys.stderr)
    print(_summary_line(summary), flush=True)
    if args.stats:
        for name, s in summary.stats.items():
            print(
                f"  {name:8} succeeded {s.succeeded:6}  failed {s.failed:4}  retried {s.retried:4}"
            )
    if summary.interrupted is not None:
        report = summary.interrupted.report
        unstarted = len(report.unstarted)
        how = (
            "in-flight documents were finished and recorded"
            if report.finished
            else "stopped at once: documents in flight were not recorded"
        )
        print(
            f"interrupted: {how}; {unstarted} read but not started. Run the same command "
            "again to index the rest.",
            file=sys.stderr,
        )
        return 128 + (summary.interrupted.signal or 15)
    return 1 if summary.failed else 0


def _summary_line(s: Summary) -> str:
    return (
        f"indexed {s.indexed} documents ({s.chunks} chunks), skipped {s.skipped} already "
        f"indexed, {len(s.failed)} failed"
    )


def _query(args: argparse.Namespace) -> int:
    from .embed_client import embed_query
    from .embed_server import EmbeddingService
    from .store import Store

    if not Path(args.db).exists():
        print(f"{args.db}: no such index; build one with the index command", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        url = args.embed_url
        if url is None:
            url = stack.enter_context(EmbeddingService(latency=args.latency)).url
        vector = embed_query(url, args.text)
        store = stack.enter_context(Store(args.db, use_vec=False if args.no_vec else None))
        hits = store.search(vector, args.k)
    if not hits:
        print("no matches (is the index empty?)")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. {hit.score:.3f}  {hit.path} #{hit.seq}")
        print(textwrap.indent(textwrap.shorten(hit.text, 300), "     "))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .embed_server import EmbeddingService

    service = EmbeddingService(
        args.host, args.port, latency=args.latency, rate=args.service_rate, burst=args.burst
    )
    print(f"embedding service on {service.url} (Ctrl-C to stop)", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    return 0


def _corpus(args: argparse.Namespace) -> int:
    from .corpus import make_corpus

    paths = make_corpus(args.dir, args.documents, broken=not args.clean)
    print(f"wrote {len(paths)} documents to {args.dir}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.indexer", description="Index documents and search them."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("index", help="index the documents under DIR")
    p.set_defaults(run=_index)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--db", default="index.db", help="the SQLite index (default: index.db)")
    p.add_argument("--embed-url", help="a running embedding service (default: start one)")
    p.add_argument("--latency", type=float, default=0.3, help="local service: s per request")
    p.add_argument("--service-rate", type=float, default=50.0, help="local service: requests/s")
    p.add_argument("--rate", type=float, default=40.0, help="embed stage: requests/s")
    p.add_argument("--extract-workers", type=int, default=2)
    p.add_argument("--embed-workers", type=int, default=16)
    p.add_argument("--timeout", type=float, default=5.0, help="deadline per request (s)")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-vec", action="store_true", help="brute force even if sqlite-vec loads")
    p.add_argument("--no-progress", action="store_true", help="no live view on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per document indexed")
    p.add_argument("--stats", action="store_true", help="per-stage counts at the end")

    p = commands.add_parser("query", help="print the chunks nearest to TEXT")
    p.set_defaults(run=_query)
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--db", default="index.db")
    p.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    p.add_argument("--embed-url", help="a running embedding service (default: start one)")
    p.add_argument("--latency", type=float, default=0.0, help="local service: s per request")
    p.add_argument("--no-vec", action="store_true", help="brute force even if sqlite-vec loads")

    p = commands.add_parser("serve", help="run the embedding service until Ctrl-C")
    p.set_defaults(run=_serve)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--service-rate", type=float, default=50.0)
    p.add_argument("--burst", type=int, default=10)

    p = commands.add_parser("corpus", help="write a demo corpus to DIR")
    p.set_defaults(run=_corpus)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--documents", type=int, default=24)
    p.add_argument("--clean", action="store_true", help="leave out the damaged/bad documents")
    return parser


if __name__ == "__main__":
    sys.exit(main())
