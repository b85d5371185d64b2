"""Property tests of Pipeline: every input accounted for once, outputs = the serial composition."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workpool import Pipeline, Stage

pytestmark = pytest.mark.timeout(120)

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Bad(Exception):
    pass


def make_fn(kind: str, k: int) -> Any:
    """A stage function of ``kind`` with parameter ``k`` (a picklable closure is not needed:
    these run on threads)."""
    if kind == "map":
        return lambda x: x * 3 + k
    if kind == "fail":

        def fail(x: int) -> int:
            if x % 5 == k % 5:
                raise Bad(x)
            return x + 1

        return fail
    if kind == "flat":
        return lambda x: [x + i for i in range(x % (k + 1))]
    if kind == "batch":
        return lambda batch: [x - k for x in batch]
    if kind == "sink":
        return lambda batch: None
    raise AssertionError(kind)


def serial(kinds: list[tuple[str, int]], x: int) -> tuple[list[Any], bool]:
    """What one input becomes, run by hand: its outputs in order, and whether any failed."""
    branch: list[Any] = [x]
    failed = False
    for kind, k in kinds:
        fn = make_fn(kind, k)
        nxt: list[Any] = []
        for v in branch:
            if kind in ("batch", "sink"):
                out = fn([v])
                nxt.append(v if out is None else out[0])
            elif kind == "flat":
                nxt.extend(fn(v))
            else:
                try:
                    nxt.append(fn(v))
                except Bad:
                    failed = True
        branch = nxt
    return branch, failed


STAGES = st.lists(
    st.tuples(st.sampled_from(["map", "fail", "flat", "batch", "sink"]), st.integers(0, 3)),
    min_size=1,
    max_size=4,
)


def build(kinds: list[tuple[str, int]], workers: int) -> Pipeline:
    stages = []
    for i, (kind, k) in enumerate(kinds):
        fn = make_fn(kind, k)
        if kind in ("batch", "sink"):
            stages.append(Stage(fn, name=f"s{i}", batch_size=k + 1, workers=workers))
        else:
            stages.append(Stage(fn, name=f"s{i}", flat=kind == "flat", workers=workers))
    return Pipeline(*stages)


@PROPERTY
@given(kinds=STAGES, inputs=st.lists(st.integers(0, 50), max_size=40), workers=st.integers(1, 3))
def test_per_input_accounts_for_every_input_exactly_once(
    kinds: list[tuple[str, int]], inputs: list[int], workers: int
) -> None:
    with build(kinds, workers) as pipeline:
        got = list(pipeline.results(inputs, per_input=True))
    assert sorted(r.index for r in got) == list(range(len(inputs)))
    for r in got:
        assert r.item == inputs[r.index]
        expected, failed = serial(kinds, inputs[r.index])
        assert (r.error is not None) == failed, (r, expected)
        assert r.value == expected  # the outputs that left, in path order (partial if failed)


@PROPERTY
@given(
    kinds=STAGES,
    inputs=st.lists(st.integers(0, 50), max_size=40),
    workers=st.integers(1, 3),
    ordered=st.booleans(),
)
def test_results_equal_the_serial_composition(
    kinds: list[tuple[str, int]], inputs: list[int], workers: int, ordered: bool
) -> None:
    with build(kinds, workers) as pipeline:
        got = list(pipeline.results(inputs, ordered=ordered))
    outputs: dict[int, list[Any]] = {}
    failures: dict[int, int] = {}
    for r in got:
        if r.ok:
            outputs.setdefault(r.index, []).append(r.value)
        else:
            failures[r.index] = failures.get(r.index, 0) + 1
            assert r.stage is not None and isinstance(r.error, Bad)
    for i, x in enumerate(inputs):
        expected, failed = serial(kinds, x)
        assert sorted(outputs.get(i, [])) == sorted(expected)
        assert (i in failures) == failed
        if ordered:
            assert outputs.get(i, []) == expected  # in path order
    if ordered:
        indexes = [r.index for r in got]
        assert indexes == sorted(indexes)


@PROPERTY
@given(
    kinds=STAGES,
    inputs=st.lists(st.integers(0, 50), max_size=40),
    long=st.booleans(),
    workers=st.integers(1, 3),
    mode=st.sampled_from(["unordered", "ordered", "per_input"]),
    take=st.integers(0, 45),
)
def test_the_report_counts_every_input_read_once_even_when_the_call_is_left_early(
    kinds: list[tuple[str, int]],
    inputs: list[int],
    long: bool,
    workers: int,
    mode: str,
    take: int,
) -> None:
    # A long input keeps the stages busy when the consumer leaves. (Not an endless one: a
    # pipeline may drop every item, and then no result would ever come.)
    items = inputs + [i % 51 for i in range(500)] if long else inputs
    read = [0]

    def source() -> Any:
        for x in items:
            read[0] += 1
            yield x

    with build(kinds, workers) as pipeline:
        it = pipeline.results(source(), ordered=mode == "ordered", per_input=mode == "per_input")
        taken = [r for _, r in zip(range(take), it)]
        left_early = len(taken) == take  # (else the input ran out first)
        it.close()  # the consumer leaves (with work in flight, or after the last result)
        report = pipeline.shutdown()
    # Every input read is completed, failed or cancelled: once, whatever the exit.
    assert report.completed + report.failed + report.cancelled == read[0]
    assert report.unstarted == []  # nothing was cut short by a deadline
    if not left_early:  # the loop ran to its end: the counts are the serial ones
        failed = sum(serial(kinds, x)[1] for x in items)
        assert (report.completed, report.failed, report.cancelled) == (
            len(items) - failed,
            failed,
            0,
        )
