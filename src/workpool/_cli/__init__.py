"""``workpool run``: GNU parallel / ``xargs -P`` with results, resume and graceful drain.

Run a command, or a Python function, over every line of the input with a bounded pool::

    find . -name '*.py' | workpool run -j 8 -- wc -l {}
    workpool run -j 16 --input urls.txt --timeout 10 --retries 2 --call mymod:fetch
    workpool run -j 4 --input files.txt --journal run.db --output results.jsonl -- gzip -k {}

Inputs are the lines of ``--input`` (or standard input), read lazily; with ``--jsonl`` each
line is a JSON value, given parsed. Each runs a command (``-- COMMAND ARGS {}``, without a
shell) or a Python function (``--call package.module:function``), and each finished item is
one JSON line of ``--output`` (or standard output), in the order they finish
(``--keep-order``: input order). Standard error shows a progress bar when it is a terminal,
and always a one-line summary at the end.

``--journal run.db`` records each finished item in SQLite: rerunning the same command over
the same input with the same journal skips what succeeded (and retries what failed), so a
run that was killed, even by SIGKILL, resumes without redoing or losing work, and an
``--output`` file ends up with one line per item, its latest outcome. The first SIGINT or
SIGTERM stops reading input and lets the running items finish; their results are written
and journaled, then the summary, exit status 130 or 143. A second signal stops at once,
killing running commands.

Exit status: 0 when every item succeeded, 1 when some failed, 2 for a usage error (with a
message that says what is wrong) or a bad journal, 128 + N when stopped by signal N, 141
(128 + SIGPIPE) when the output's reader went away: the first failed write stops the run
(nothing starts after it, running commands are killed).

``--backend process`` runs ``--call`` functions in worker processes (for CPU-bound code),
``--backend dask [--address tcp://host:8786]`` on a Dask cluster (a local one without
``--address``; the target's module must be importable on the workers); commands always run
from threads, since each is a process of its own.

The modules, one concern each (only workpool's public API is used)::

    main       the arguments, and the flow of one run (below)
    inputs     reading the input lines into (index, text, value) items
    commands   running a command per input; every running command, to kill them all
    calls      importing and calling a --call target
    output     formatting the JSON lines; the writer thread; opening and repairing the output
    journal    the SQLite journal that a rerun resumes from
    progress   the progress bar and the summary line
    stopping   a signal (drain, then stop at once) or a failed write stops the run

How a run flows::

    input ──▶ Input.items() ──▶ pool.results(task, items) ──▶ Writer.add()     main thread
              lazily; skips what    workers call the task        │ a deque append
              the journal has done  (CallTask/CommandTask)       ▼
                                                  writer thread: every 20 ms or 256 results,
                                                  format the lines, commit them to the
                                                  journal, then write them to the output

    SignalWatch: told by the pool of SIGINT/SIGTERM (it drains, then cancels): input stops
    Stopper: told by the writer thread that a write failed: everything stops at once
"""

from .main import main

__all__ = ["main"]
