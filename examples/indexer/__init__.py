"""A document indexer built on ``workpool.Pipeline``: the seeds' production example, for real.

It reads a folder of documents (PDF, Markdown, HTML, text), extracts their text on worker
processes, splits it into chunks, embeds each chunk through an HTTP embedding service (rate
limited, retried, with a deadline per request) and stores the vectors in SQLite, where the
``query`` command finds the chunks nearest to a question. Run it with::

    python -m examples.indexer corpus /tmp/docs          # a demo corpus (or use your own)
    python -m examples.indexer index /tmp/docs --db /tmp/index.db
    python -m examples.indexer query "token bucket" --db /tmp/index.db

One module per job, each readable on its own:

=================  ==================================================================
``extract.py``     stage 1: a file -> its text (pypdf, html.parser, UTF-8)
``chunks.py``      stage 2: text -> overlapping chunks of words (a ``flat`` stage)
``embed_client.py``  stage 3: a chunk -> its vector, over HTTP with httpx (a coroutine)
``store.py``       stage 4 and search: SQLite, sqlite-vec or a brute-force cosine
``embed_server.py``  the local embedding service that stands in for an external API
``pipeline.py``    the four stages wired into a ``workpool.Pipeline``, and reruns
``corpus.py``      a generated corpus, with a damaged PDF and a non-UTF-8 file
``__main__.py``    the command line
=================  ==================================================================

See README.md beside this file.
"""
