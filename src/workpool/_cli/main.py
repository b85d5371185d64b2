"""``workpool run``'s command line and the flow of one run.

:func:`main` parses the arguments (a bad one is a usage error, exit status 2, with a
message that names the flag and what is allowed), then :func:`run` checks them, opens the
input, the journal and the output, runs the pool over the items and prints the summary.
The package docstring (:mod:`workpool._cli`) draws how the pieces connect.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import workpool
from workpool import (
    ConfigError,
    Interrupted,
    Pool,
    PoolClosed,
    Result,
    TaskCancelled,
    WorkpoolError,
    _backends,
)
from workpool._units import is_coroutine_function

from .calls import AsyncCallTask, CallTask, load_target
from .commands import CommandTask, children
from .inputs import Input, open_input
from .output import (
    OutputFailed,
    Writer,
    error_text,
    format_call,
    format_command,
    open_output,
    restore_stdout,
)
from .progress import Progress, summary
from .stopping import SignalWatch, Stopper

if TYPE_CHECKING:
    from .journal import Journal

__all__ = ["main", "run"]


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``workpool`` parser and its ``run`` subcommand's parser."""
    parser = argparse.ArgumentParser(
        prog="workpool",
        description="Bounded concurrency from the shell: run a command or a Python function "
        "over many inputs.",
    )
    parser.add_argument("--version", action="version", version=f"workpool {workpool.__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a command or a Python function over every input line",
        description="Run a command (after --) or a Python function (--call) over every line "
        "of the input, with a bounded pool; one JSON object a line per finished item.",
        epilog="examples:\n"
        "  ls *.txt | workpool run -j 8 -- wc -l {}\n"
        "  workpool run -j 16 --input urls.txt --timeout 10 --retries 2 --call mymod:fetch\n"
        "  workpool run --input files.txt --journal run.db --output out.jsonl -- gzip -k {}\n\n"
        "{} exactly: the input; {} inside an argument: the shell-quoted input; no {}: the "
        "input is appended.\n"
        "exit status: 0 all succeeded, 1 some failed, 2 usage error, 130/143 stopped by "
        "SIGINT/SIGTERM, 141 the output's reader went away.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "-j",
        "--workers",
        type=int,
        metavar="N",
        help="how many items run at once (default: the number of CPUs)",
    )
    run.add_argument(
        "--backend",
        choices=_backends.names(),
        default="thread",
        help="where --call functions run: thread (default; async for a coroutine function), "
        "process for CPU-bound ones, or dask for a Dask cluster (see --address)",
    )
    run.add_argument(
        "--address",
        metavar="ADDR",
        help="with --backend dask: the scheduler to run on, e.g. tcp://host:8786 (default: "
        "a local cluster on this machine); the --call module must be importable on the workers",
    )
    run.add_argument(
        "--timeout",
        metavar="S",
        help="seconds an item may run; a command past it is killed (inf: no limit, the default)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="retry a failed item up to N times (exponential backoff)",
    )
    run.add_argument(
        "--rate",
        metavar="RATE",
        help='start at most this many items, e.g. "10/s", "30/min", or 10 (a second)',
    )
    run.add_argument(
        "-a",
        "--input",
        metavar="FILE",
        help="read the inputs from FILE, one a line (default: standard input)",
    )
    run.add_argument(
        "--jsonl", action="store_true", help="each input line is a JSON value, passed parsed"
    )
    run.add_argument(
        "-o", "--output", metavar="FILE", help="write the results to FILE (default: stdout)"
    )
    run.add_argument(
        "--journal",
        metavar="FILE",
        help="record finished items in FILE (SQLite); rerun with it to resume",
    )
    run.add_argument(
        "-k",
        "--keep-order",
        action="store_true",
        help="write results in input order (default: as they finish)",
    )
    run.add_argument(
        "--call",
        metavar="MODULE:FUNCTION",
        help="call this Python function with each input instead of running a command",
    )
    run.add_argument("command", nargs="*", help="the command to run, after -- (e.g. -- wc -l {})")
    return parser, run


def main(argv: list[str] | None = None) -> int:
    """The ``workpool`` console script; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    # Everything after the first "--" is the command, verbatim (argparse would eat its flags).
    tail: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, tail = args[:cut], args[cut + 1 :]
    args = _glue_negative_values(args)
    parser, run_parser = _parser()
    try:
        ns = parser.parse_args(args)
        if ns.subcommand is None:
            parser.print_help(sys.stderr)
            return 2
        ns.command = [*ns.command, *tail]
        return run(ns, run_parser)
    except SystemExit as e:  # argparse's usage errors (2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:  # before the pool took over SIGINT
        return 130


# A value that starts with "-" but that argparse does not take for a negative number
# ("-1/s", "-inf", "-1e3"): argparse would read it as an unknown flag and say the option
# "expected one argument" instead of what is wrong with the value.
_NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)
_NUMBER_FLAGS = frozenset({"-j", "--workers", "--timeout", "--retries", "--rate"})


def _glue_negative_values(args: list[str]) -> list[str]:
    """``--rate -1/s`` as ``--rate=-1/s``, so the value gets its own error message."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] in _NUMBER_FLAGS and _NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _timeout(text: str | None, parser: argparse.ArgumentParser) -> float | None:
    """``--timeout``'s seconds; None for no limit: none given, ``inf``, or too far to matter.

    A deadline beyond ``threading.TIMEOUT_MAX`` (about 292 years) is more than the
    platform's waits can take, and no limit in practice.
    """
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # also NaN
        parser.error(
            f"invalid --timeout: give seconds > 0 (e.g. 30 or 0.5), or inf for no limit, got {text!r}"
        )
    return None if seconds >= threading.TIMEOUT_MAX else seconds


def run(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``workpool run``: check the arguments, open the files, run, summarise; the exit status."""
    started = time.monotonic()
    if ns.call is not None and ns.command:
        parser.error("give either --call MODULE:FUNCTION or a command after --, not both")
    if ns.call is None and not ns.command:
        parser.error(
            "nothing to run: give a command after -- (e.g. -- echo {}) or --call MODULE:FUNCTION"
        )
    ns.timeout = _timeout(ns.timeout, parser)
    _standard_fds(ns, parser)
    watch = SignalWatch(sys.stderr.isatty())
    if ns.address is not None and ns.backend != "dask":
        parser.error("--address names a Dask scheduler: it needs --backend dask")
    # The task first: a usage error in it must come before a pool connects to a cluster.
    task, fmt, command = _make_task(ns, parser)  # (an async --call target picks the backend)
    pool = watch.pool = _make_pool(ns, parser, watch)
    lines, journal, fd, offset = _open_files(ns, parser, watch, command)
    from .journal import JournalError

    source = Input(lines, ns.jsonl, watch)
    progress = Progress(ns.input) if watch.tty else None
    writer = Writer(fd, offset, fmt, journal, progress, source, Stopper(pool, watch))
    done = journal.succeeded() if journal is not None and journal.resumed else None
    stopped_by: int | None = None
    failure: BaseException | None = None
    children.reset()
    writer.start()
    try:
        with pool:
            handed = source.handed
            for r in pool.results(task, source.items(done), ordered=ns.keep_order):
                writer.add(r)
                del handed[r.item[0]]  # (a second signal may land between: see below)
    except Interrupted as e:
        stopped_by = e.signal
        try:
            _write_unfinished(writer, source, e)
        except OutputFailed as failed:
            failure = failed.__cause__
    except OutputFailed as e:
        failure = e.__cause__
    except PoolClosed as e:  # the writer failed and shut the pool (Stopper)
        failure = writer.error or e
    except (JournalError, OSError) as e:  # reading the input or the journal failed midway
        failure = e
    finally:
        children.kill_all()  # commands of cancelled or abandoned tasks
        writer.close()
        watch.close()  # after the writer: its Stopper may still stop the input
        if progress is not None:
            progress.close()
        if ns.output in (None, "-"):
            restore_stdout(fd)
        else:
            os.close(fd)

    failure = failure or writer.error
    if stopped_by is None:
        stopped_by = watch.first  # the input ended at the signal before the pool said so
    summary(writer, source, time.monotonic() - started, stopped_by)
    if stopped_by is not None:
        return 128 + stopped_by
    if failure is not None:
        if isinstance(failure, BrokenPipeError):
            return 128 + signal.SIGPIPE  # the reader went away (`| head`): stop quietly
        if isinstance(failure, JournalError):  # a bad journal, found late: as a usage error
            print(f"workpool: error: {failure}", file=sys.stderr)
            return 2
        if failure is writer.error and isinstance(failure, OSError):
            # The output could not be written (a full disk, say): the summary counted what was.
            print(f"workpool: error: cannot write the results: {failure}", file=sys.stderr)
        else:
            print(f"workpool: error: {error_text(failure)}", file=sys.stderr)
        return 1
    return 0 if writer.failed == writer.cancelled == writer.stopped == 0 else 1


def _open_files(
    ns: argparse.Namespace,
    parser: argparse.ArgumentParser,
    watch: SignalWatch,
    command: dict[str, Any],
) -> tuple[Iterator[str], Journal | None, int, int]:
    """The input lines, the journal, and the output's file descriptor and length.

    The input first, then the journal (which may read the first lines to check them), then
    the output (repaired and appended to on a resume). A usage error leaves no new file behind.
    """
    _distinct_files(ns, parser)
    where = "standard input" if ns.input in (None, "-") else f"--input {ns.input}"
    try:
        lines, input_name = open_input(ns.input, watch.stop_fd)
    except OSError as e:
        parser.error(f"cannot read {where}: {e.strerror or e}")
    from .journal import JournalError, output_key

    output = output_key(ns.output)
    journal: Journal | None = None
    if ns.journal is not None:
        from .journal import Journal

        try:
            journal = Journal.open(
                ns.journal, command=command, input_name=input_name, output=output
            )
            if journal.resumed:
                lines = journal.check_input(lines)
        except (JournalError, OSError) as e:
            if journal is not None:
                journal.discard()
            if isinstance(e, JournalError):
                parser.error(str(e))
            parser.error(f"cannot read {where}: {e.strerror or e}")
    try:
        fd, offset = open_output(ns.output, journal, output)
    except (JournalError, OSError) as e:
        if journal is not None:
            journal.discard()
        if isinstance(e, JournalError):
            parser.error(str(e))
        parser.error(f"cannot write --output {ns.output}: {e.strerror or e}")
    return lines, journal, fd, offset


def _standard_fds(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Standard input, output or error closed by the caller (``<&-``, ``>&-``, ``2>&-``):
    each is opened on /dev/null, so that no file of this run takes its number (the output
    written to the input's descriptor, say); then a usage error if the run reads or writes
    the one that was closed. Without standard error, the run goes on and says nothing."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 2 in closed:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115
    if 0 in closed and ns.input in (None, "-"):
        parser.error("standard input is closed: give the input with --input FILE")
    if 1 in closed and ns.output in (None, "-"):
        parser.error("standard output is closed: give the output with -o FILE")


def _distinct_files(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A usage error when the input, the output and the journal are not three files: the
    output would empty the input before it is read, or be written into the journal."""
    named: list[tuple[str, Any]] = []
    if ns.input in (None, "-"):
        named.append(("the standard input", 0))  # (``< results.jsonl``)
    else:
        named.append((f"--input {ns.input}", ns.input))
    if ns.journal is not None:
        named.append((f"--journal {ns.journal}", ns.journal))
    if ns.output not in (None, "-"):
        named.append((f"--output {ns.output}", ns.output))
    seen: dict[object, str] = {}
    for name, where in named:
        key: object
        try:
            st = os.fstat(where) if where == 0 else os.stat(where)
        except FileNotFoundError:
            key = os.path.realpath(where)  # not there yet (a new output or journal)
        except OSError:
            continue  # nothing this run could write over
        else:
            if not stat.S_ISREG(st.st_mode):
                continue  # a pipe, a terminal, /dev/null: not a file that could be lost
            key = (st.st_dev, st.st_ino)
        if key in seen:
            parser.error(f"{name} is the same file as {seen[key]}: give each its own file")
        seen[key] = name


# The Pool option behind each flag, to name the flag in a ConfigError's message.
_FLAGS = {
    "workers": "-j/--workers",
    "task_timeout": "--timeout",
    "retries": "--retries",
    "rate_limit": "--rate",
    "address": "--address",
}


def _rate(text: str | None) -> str | float | None:
    """``--rate``: "N/unit", or a plain number of starts a second (as the Pool takes it)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _write_unfinished(writer: Writer, source: Input, stop: Interrupted) -> None:
    """A second signal stopped the run at once: the items it cancelled gave no result. Each
    still gets its line (``TaskCancelled``), journaled as not done, so that the output says
    what happened to every item read: not started (``attempts`` 0) or cut off."""
    unstarted = {u.args[0][0] for u in stop.report.unstarted if u.args}
    last = writer.last  # the last result taken: a signal that landed after writer.add()
    for item in source.unfinished():  # and before its item left ``handed`` must skip it
        if last is not None and item[0] == last.item[0]:
            continue
        if item[0] in unstarted:
            error = TaskCancelled("the run was stopped before this item started")
            attempts = 0
        else:
            error = TaskCancelled("the run was stopped at once (a second signal) as this item ran")
            attempts = 1
        writer.add(Result(index=item[0], item=item, error=error, attempts=attempts))
    source.handed.clear()


def _make_pool(ns: argparse.Namespace, parser: argparse.ArgumentParser, watch: SignalWatch) -> Pool:
    """The pool; a bad option is a usage error that names the flag (the Pool checks them)."""
    options: dict[str, Any] = {}
    if ns.address is not None:
        options["address"] = ns.address
    workers = ns.workers
    if workers is None and ns.backend != "dask":  # dask: the cluster's threads
        workers = os.cpu_count() or 1
    try:
        return Pool(
            workers,
            backend=ns.backend,
            task_timeout=ns.timeout,
            retries=ns.retries,
            rate_limit=_rate(ns.rate),
            handle_signals=watch.on_signal,
            name="workpool-run",
            **options,
        )
    except ConfigError as e:
        option = str(e).split(" ", 1)[0]
        parser.error(f"invalid {_FLAGS.get(option, 'option')}: {e}")
    except WorkpoolError as e:  # e.g. no scheduler at --address
        parser.exit(1, f"workpool run: error: {e}\n")


def _make_task(
    ns: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[Callable[[tuple[int, str, Any]], Any], Callable[[Result[Any]], str], dict[str, Any]]:
    """What runs on each item, how its result is written, and its fingerprint for a journal."""
    if ns.call is not None:
        cwd = os.getcwd()
        try:
            fn = load_target(ns.call, cwd)
        except Exception as e:
            parser.error(f"cannot use --call {ns.call}: {error_text(e)}")
        except SystemExit as e:
            # The module exits as it is imported (a script's sys.exit() at the top level):
            # nothing ran; not the status of a run.
            parser.error(
                f"cannot use --call {ns.call}: importing it raised SystemExit({e.code!r}) (a "
                "module that exits when imported; guard its script part with "
                "if __name__ == '__main__')"
            )
        fingerprint = {"call": ns.call, "jsonl": ns.jsonl}
        if is_coroutine_function(fn):
            if ns.backend == "thread":
                ns.backend = "async"  # coroutines run on an event loop, not one thread each
            return AsyncCallTask(ns.call, cwd, fn), format_call, fingerprint
        return CallTask(ns.call, cwd, fn), format_call, fingerprint
    if ns.backend != "thread":
        # A worker process killed at a timeout or a second signal would orphan the command it
        # started; and a command is a process of its own already.
        parser.error(
            f"--backend {ns.backend} is for --call functions; a command already runs in its "
            "own process, from a thread (drop --backend)"
        )
    task = CommandTask(ns.command, ns.timeout)
    if "{}" not in ns.command[0] and task.executable is None:
        parser.error(f"command not found: {ns.command[0]!r} (not an executable on PATH)")
    return task, format_command, {"argv": ns.command, "jsonl": ns.jsonl}
