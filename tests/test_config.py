"""Bad arguments fail at once with a ConfigError that names the option and the bad value."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from suite_tasks import deadline_of_me
from workpool import ConfigError, Pool, RateLimit, Retry, WorkpoolError

# The parser behind rate_limit; checked directly because a rate of "5/h" cannot be observed
# through a pool in a fast test.
from workpool._config import parse_rate

MakePool = Callable[..., Pool]


def _value(v: Any) -> str:
    """The bad value as a message shows it (its repr), escaped for ``match=``."""
    return re.escape(repr(v))


def test_config_error_is_a_workpool_error_and_a_value_error() -> None:
    assert issubclass(ConfigError, WorkpoolError)
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        Pool(workers=0)


# -- workers / queue_size / min_workers


@pytest.mark.parametrize("bad", [0, -1])
def test_workers_below_one(make_pool: MakePool, bad: int) -> None:
    with pytest.raises(ConfigError, match=rf"workers must be >= 1, got {bad}\b"):
        make_pool(workers=bad)


@pytest.mark.parametrize(("bad", "typename"), [(1.5, "float"), ("4", "str"), (True, "bool")])
def test_workers_not_an_int(make_pool: MakePool, bad: Any, typename: str) -> None:
    with pytest.raises(ConfigError, match=rf"^workers must be an int >= 1.*got {_value(bad)}"):
        make_pool(workers=bad)
    with pytest.raises(ConfigError, match=typename):
        make_pool(workers=bad)


def test_queue_size_negative(make_pool: MakePool) -> None:
    with pytest.raises(ConfigError, match=r"queue_size must be >= 0, got -1"):
        make_pool(workers=2, queue_size=-1)


@pytest.mark.parametrize("bad", [1.5, "2"])
def test_queue_size_not_an_int(make_pool: MakePool, bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"queue_size must be an int.*{_value(bad)}"):
        make_pool(workers=2, queue_size=bad)


def test_min_workers_above_workers(make_pool: MakePool) -> None:
    with pytest.raises(ConfigError, match=r"min_workers \(5\).*workers \(2\)"):
        make_pool(workers=2, min_workers=5)


def test_min_workers_negative(make_pool: MakePool) -> None:
    with pytest.raises(ConfigError, match=r"min_workers must be >= 0, got -1"):
        make_pool(workers=2, min_workers=-1)


# -- seconds


@pytest.mark.parametrize("option", ["task_timeout", "idle_timeout"])
@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_seconds_not_positive(make_pool: MakePool, option: str, bad: float) -> None:
    with pytest.raises(ConfigError, match=rf"^{option} must be > 0 seconds.*got {_value(bad)}"):
        make_pool(workers=2, **{option: bad})


@pytest.mark.parametrize("option", ["task_timeout", "idle_timeout"])
@pytest.mark.parametrize(("bad", "typename"), [("x", "str"), (True, "bool"), ([1], "list")])
def test_seconds_not_a_number(make_pool: MakePool, option: str, bad: Any, typename: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^{option} must be a number of seconds.*got {_value(bad)} \({typename}\)",
    ):
        make_pool(workers=2, **{option: bad})


# -- retries


@pytest.mark.parametrize("bad", [-1, "3", 1.5, True])
def test_retries_invalid(make_pool: MakePool, bad: Any) -> None:
    with pytest.raises(
        ConfigError, match=rf"^retries must be an int >= 0 or .*Retry.*{_value(bad)}"
    ):
        make_pool(workers=2, retries=bad)


def test_valid_retries_are_accepted(make_pool: MakePool) -> None:
    make_pool(workers=1, retries=0)
    make_pool(workers=1, retries=3)
    make_pool(workers=1, retries=Retry(retries=2, backoff=0, jitter=0, on=ValueError))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"retries": -1}, r"Retry\.retries must be >= 0, got -1"),
        ({"retries": "3"}, r"Retry\.retries must be an int.*'3'"),
        ({"backoff": -0.5}, r"Retry\.backoff must be >= 0 seconds.*-0\.5"),
        ({"backoff": "x"}, r"Retry\.backoff must be a number.*'x'"),
        ({"max_backoff": float("nan")}, r"Retry\.max_backoff .*nan"),
        ({"jitter": 2}, r"Retry\.jitter must be a number in \[0, 1\], got 2"),
        ({"jitter": -0.1}, r"Retry\.jitter .*-0\.1"),
        ({"on": (int,)}, r"Retry\.on must be an exception class.*int"),
        ({"on": "ValueError"}, r"Retry\.on must be an exception class.*'ValueError'"),
    ],
)
def test_retry_policy_fields(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Retry(**kwargs)


def test_retry_on_accepts_a_single_class() -> None:
    assert Retry(on=KeyError).on == (KeyError,)


# -- rate_limit


@pytest.mark.parametrize(
    "bad",
    ["abc", "0/s", "10/fortnight", "-5/s", "/s", "nan/s", "inf/s", -1, 0, True, float("inf")],
)
def test_rate_limit_invalid(make_pool: MakePool, bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^rate_limit must be .*got {_value(bad)}") as info:
        make_pool(workers=2, rate_limit=bad)
    # The message shows what is allowed.
    assert "/s" in str(info.value) and "/min" in str(info.value)


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [
        ("100/s", 100.0),
        ("30/min", 0.5),
        ("5/h", 5 / 3600),
        ("10/10s", 1.0),
        ("1.5/s", 1.5),
        ("1e3/s", 1000.0),
        ("2.5e-1/s", 0.25),
        (2.5, 2.5),
        (3, 3.0),
    ],
)
def test_valid_rates_parse(make_pool: MakePool, rate: Any, per_second: float) -> None:
    assert parse_rate(rate) == pytest.approx(per_second)
    make_pool(workers=1, rate_limit=rate)


@pytest.mark.parametrize("slow", ["1/4000000h", 1e-10, 1e-320, 5e-324])
def test_a_rate_slower_than_any_wait_is_a_config_error(make_pool: MakePool, slow: Any) -> None:
    # One start per ~292 years or less: the wait between starts is longer than threading
    # accepts. It was accepted, then killed the worker thread that waited (OverflowError),
    # or, for a gap of infinity, turned the limit off.
    with pytest.raises(ConfigError, match=r"^rate_limit .* is too slow: .* every \d+ years"):
        make_pool(workers=2, rate_limit=slow)
    with pytest.raises(ConfigError, match="too slow"):
        RateLimit(slow)


# -- backend, name, handle_signals


def test_unknown_backend_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'.*\bthread\b"):
        Pool(workers=1, backend="nope")


def test_backend_not_a_string() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 3\b"):
        Pool(workers=1, backend=3)  # type: ignore[arg-type]


def test_unknown_backend_option(make_pool: MakePool, backend: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown option.*{backend}.*\bfrobnicate\b"):
        make_pool(workers=1, frobnicate=True)


@pytest.mark.parametrize("bad", [3, b"pool", ["p"]])
def test_name_not_a_string(make_pool: MakePool, bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^name must be a str.*{_value(bad)}"):
        make_pool(workers=1, name=bad)


def test_handle_signals_not_a_bool(make_pool: MakePool) -> None:
    with pytest.raises(ConfigError, match=r"handle_signals.*'yes'"):
        make_pool(workers=1, handle_signals="yes")


def test_bad_config_starts_no_thread(backend: str) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ConfigError):
        Pool(workers=2, backend=backend, task_timeout=-1)
    assert set(threading.enumerate()) <= before


# -- arguments of methods


def test_non_callable_fn_is_a_type_error(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    with pytest.raises(TypeError, match="callable"):
        pool.submit(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        pool.try_submit("not a function")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        pool.map(None, [1, 2])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        pool.results(3, [1, 2])  # type: ignore[call-overload]
    # Nothing was accepted.
    assert pool.stats().submitted == 0


def test_map_and_results_check_their_options_at_the_call(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    with pytest.raises(ConfigError, match=r"chunksize must be >= 1, got 0"):
        pool.map(abs, [1], chunksize=0)
    with pytest.raises(ConfigError, match=r"chunksize must be an int.*'2'"):
        pool.results(abs, [1], chunksize="2")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match=r"timeout .*-1"):
        pool.map(abs, [1], timeout=-1)
    with pytest.raises(TypeError, match="iterable"):
        pool.map(abs, 5)  # type: ignore[call-overload]
    # Not any truthy value: "yes" or None would pass unnoticed (an outside tester's finding).
    for bad in ("yes", None, 1):
        with pytest.raises(TypeError, match=rf"ordered must be True or False, got {bad!r}"):
            pool.results(abs, [1], ordered=bad)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=rf"progress must be True or False, got {bad!r}"):
            pool.map(abs, [1], progress=bad)  # type: ignore[call-overload]
    # Past what Python's own counts take: a clear error here, not islice()'s later.
    with pytest.raises(ConfigError, match=r"chunksize must be at most sys.maxsize"):
        pool.map(abs, [1, 2], chunksize=2**63)  # (it failed at the first read)
    assert list(pool.map(abs, [-1, -2], chunksize=sys.maxsize)) == [1, 2]  # (islice's limit)
    assert list(pool.map(abs, [-1, -2])) == [1, 2]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("option", ["workers", "queue_size"])
def test_counts_up_to_sys_maxsize_work_as_no_limit(option: str) -> None:
    # workers=sys.maxsize failed in the intake (OverflowError), queue_size=sys.maxsize made
    # it loop for ever sizing units it would never read (a reviewer's finding).
    with Pool(**{option: sys.maxsize}) as pool:  # type: ignore[arg-type]
        assert list(pool.map(abs, range(-2000, 0))) == list(range(2000, 0, -1))
        values = [r.unwrap() for r in pool.results(abs, iter(range(-50, 0)))]
        assert sorted(values) == list(range(1, 51))


def test_lifecycle_methods_check_their_timeouts(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    with pytest.raises(ConfigError, match=r"timeout.*-1"):
        pool.join(timeout=-1)
    with pytest.raises(ConfigError, match=r"timeout.*'x'"):
        pool.shutdown(timeout="x")  # type: ignore[arg-type]
    # "no" is true: it would wait (an outside tester's finding).
    with pytest.raises(TypeError, match=r"shutdown\(\) wait must be True or False, got 'no'"):
        pool.shutdown(wait="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cancel_futures must be True or False, got 1"):
        pool.shutdown(cancel_futures=1)  # type: ignore[arg-type]
    assert pool.submit(abs, -3).result(timeout=5) == 3


@pytest.mark.parametrize("bad", [0, -2])
def test_resize_below_one(make_pool: MakePool, bad: int) -> None:
    pool = make_pool(workers=2)
    with pytest.raises(ConfigError, match=rf"workers must be >= 1, got {bad}\b"):
        pool.resize(bad)
    assert pool.stats().max_workers == 2


@pytest.mark.parametrize("bad", ["3", 2.0, True])
def test_resize_not_an_int(make_pool: MakePool, bad: Any) -> None:
    pool = make_pool(workers=2)
    with pytest.raises(ConfigError, match=rf"workers must be an int.*{_value(bad)}"):
        pool.resize(bad)
    assert pool.stats().max_workers == 2


def test_resize_below_min_workers(make_pool: MakePool) -> None:
    pool = make_pool(workers=4, min_workers=2)
    with pytest.raises(ConfigError, match=r"resize\(workers=1\).*min_workers=2.*resize to"):
        pool.resize(1)
    assert pool.stats().max_workers == 4


# -- infinite and huge timeouts: no limit, never an OverflowError in some thread

HUGE = [float("inf"), 1e300, threading.TIMEOUT_MAX * 2]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("big", HUGE, ids=["inf", "1e300", "2xTIMEOUT_MAX"])
def test_huge_timeouts_mean_no_limit(make_pool: MakePool, big: float) -> None:
    pool = make_pool(workers=2, task_timeout=big, idle_timeout=big, retries=Retry(1, backoff=0))
    tasks = [pool.submit(deadline_of_me) for _ in range(4)]
    assert [t.result(timeout=big) for t in tasks] == [None] * 4
    assert list(pool.map(abs, range(-20, 0), timeout=big)) == list(range(20, 0, -1))
    assert [r.value for r in pool.results(abs, [-1], timeout=big)] == [1]
    assert pool.join(timeout=big) is True
    assert pool.stats().workers >= 1  # idle_timeout=inf: nobody retires
    assert pool.shutdown(timeout=big).finished is True


def test_huge_task_timeout_reports_no_deadline(make_pool: MakePool) -> None:
    pool = make_pool(workers=1, task_timeout=float("inf"))
    assert pool.submit(deadline_of_me).result(timeout=5) is None


def test_retry_with_infinite_max_backoff_works(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=1, retries=Retry(2, backoff=0.001, max_backoff=float("inf")))
    calls = shared.counter()

    def flaky() -> int:
        if calls.add() <= 2:
            raise OSError("flaky")
        return 7

    assert pool.submit(flaky).result(timeout=10) == 7


@pytest.mark.parametrize("bad", [float("inf"), 1e300])
def test_retry_backoff_must_be_below_the_longest_wait(bad: float) -> None:
    # (It said "must be finite" for 1e300, which is finite: the bound is the longest wait.)
    with pytest.raises(ConfigError, match=r"Retry.backoff must be a number of seconds below \d+"):
        Retry(3, backoff=bad)


@pytest.mark.timeout(20)
def test_the_interpreter_exits_after_shutdown_with_an_infinite_timeout(backend: str) -> None:
    script = textwrap.dedent(
        f"""
        from workpool import Pool
        if __name__ == "__main__":
            pool = Pool(2, backend={backend!r}, task_timeout=float("inf"))
            print(pool.submit(abs, -3).result(timeout=float("inf")))
            print(pool.shutdown(timeout=float("inf")).finished)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "True"]
    assert "Error" not in out.stderr, out.stderr
