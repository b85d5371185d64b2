"""The driver seam is real: a driver written outside the library (tests/loop_driver.py) runs
a representative part of the behavioural suite, one asyncio task per slot, no thread each.

The tests below are the suite's own, imported and run here with ``backend`` bound to the
test-only backend; only tests whose tasks never block are taken (this driver runs calls
inline on its loop).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import loop_driver
from test_map_results import (  # noqa: F401 - collected here, on this module's backend
    test_batching_keeps_per_item_errors,
    test_current_task_knows_each_batched_call,
    test_empty_input,
    test_failing_input_yields_in_flight_results_then_raises,
    test_intake_stays_bounded_while_streaming,
    test_map_raises_task_error_at_the_failed_item,
    test_results_never_raises_for_task_failures,
    test_several_iterables_zip,
)
from test_retries_rate import (  # noqa: F401
    test_always_failing_task_errors_after_n_plus_one_attempts,
    test_task_that_fails_k_times_then_succeeds,
)
from test_shutdown import (  # noqa: F401
    test_shutdown_is_idempotent_from_many_threads,
    test_submit_after_shutdown_raises_pool_closed,
)
from test_submit import (  # noqa: F401
    test_args_and_kwargs_are_passed,
    test_outcome_of_a_failure,
    test_outcome_of_a_success,
    test_result_and_exception,
    test_submit_returns_tasks_with_unique_increasing_ids,
)
from workpool import Pool

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module", autouse=True)
def installed() -> Iterator[None]:
    loop_driver.install()
    yield
    loop_driver.uninstall()


@pytest.fixture
def backend() -> str:
    return loop_driver.NAME


def test_slots_are_tasks_of_one_loop_not_threads() -> None:
    before = threading.active_count()
    with Pool(8, backend=loop_driver.NAME, min_workers=8) as pool:
        assert list(pool.map(abs, range(-1000, 0))) == list(range(1000, 0, -1))
        assert pool.stats().workers == 8
        # The loop's thread, and the timer thread at most: no thread per slot.
        assert threading.active_count() <= before + 2
        slots = pool._engine.crew.started
        assert len(slots) == 8 and all(s.task is not None and s.thread is None for s in slots)
