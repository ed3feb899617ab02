"""Nothing lost: the stack of `make run` (web, both pools, housekeeping, beat under the supervisor) with its
own PostgreSQL and Redis, through stops, kills and outages. After each fault every job ends completed or
failed with a true message, none renders twice, no file or row is doubled and nothing stays queued or
processing. The faults themselves live in tests/faults.py, which `make bench-faults` runs with more jobs.
"""

import pytest
from faults import (
    QUICK_SETTINGS,
    FaultStack,
    database_stopped,
    poison_job,
    pool_restarted,
    redis_killed,
    stack_restarted,
    worker_killed,
)
from helpers import worker_env

JOBS = 4
# A job that renders for about 20 s on the tiny model (128×128): longer than a lost worker takes to notice
# (WORKER_LOST_AFTER, the scheduler's confirmation and a tick), so that taking it back would show.
LONG_STEPS = 100


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    """One stack for the module: each fault leaves it running and healthy for the next."""
    stack = FaultStack(tmp_path_factory.mktemp("faults"), worker_env())
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def assert_nothing_lost(outcome, completed):
    assert (outcome.lost, outcome.doubled, outcome.stuck) == ([], [], []), (outcome, )
    assert outcome.completed == completed, outcome


def test_stopping_the_stack_lets_the_running_job_finish_and_loses_no_waiting_job(stack):
    outcome = stack_restarted(stack, JOBS)
    assert "the job running at the stop ended completed before the stack stopped" in outcome.notes
    assert_nothing_lost(outcome, JOBS)
    assert outcome.failed == {}


def test_a_broker_that_lost_everything_is_refilled_from_the_database(stack):
    outcome = stack_restarted(stack, JOBS, broker_data_lost=True)
    assert_nothing_lost(outcome, JOBS)


def test_jobs_queued_before_and_during_a_redis_outage_all_run_once_it_is_back(stack):
    down = QUICK_SETTINGS["WORKER_LOST_AFTER"] + 2  # every heartbeat expires meanwhile
    outcome = redis_killed(stack, JOBS, down=down, long_steps=LONG_STEPS)
    assert "2 of 2 jobs submitted while Redis was down were accepted" in outcome.notes  # the database holds them
    # Its worker was never gone: the job running through the outage is not taken from it.
    assert "the job running through the outage was started 1 time(s) and ended completed" in outcome.notes
    assert_nothing_lost(outcome, 1 + JOBS + 2)
    assert outcome.starts == 1 + JOBS + 2


def test_a_database_outage_answers_503_in_json_and_every_job_runs_once_it_is_back(stack):
    outcome = database_stopped(stack, JOBS, down=6, long_steps=LONG_STEPS // 2)
    assert outcome.answers["during"] and set(outcome.answers["during"]) == {(503, "application/json")}
    assert outcome.answers["after"] == [201] * 10  # no stale pooled connection answers 500
    long = next(note for note in outcome.notes if note.startswith("the job rendering through the outage"))
    assert long.endswith("started 1 time(s) and ended completed")
    assert_nothing_lost(outcome, 1 + JOBS + 10)


def test_restarting_a_pool_lets_its_long_job_finish_while_beat_goes_on(stack):
    outcome = pool_restarted(stack, JOBS, long_steps=LONG_STEPS)
    assert "the long job was started 1 time(s) and ended completed" in outcome.notes
    assert_nothing_lost(outcome, 1 + JOBS)
    assert "sdxl exited (status 0)" in stack.output()  # a warm shutdown, then started again


def test_the_job_of_a_worker_killed_with_sigkill_runs_again_on_its_restarted_worker(stack):
    outcome = worker_killed(stack, JOBS)
    assert_nothing_lost(outcome, JOBS)
    assert outcome.starts == JOBS + 1  # the orphan started once more, nothing else did
    assert "sdxl exited (killed by SIGKILL)" in stack.output()


def test_a_poison_job_fails_after_three_tries_and_the_others_complete(stack):
    outcome = poison_job(stack, JOBS)
    assert outcome.kills == 3
    [(poison, error)] = outcome.failed.items()
    assert error == ("The job was stopped 3 times by its worker dying while it ran (a crash, or running out of "
                     "memory); it is not tried again.")
    assert_nothing_lost(outcome, JOBS)
