"""
A Celery app for end-to-end tests that must kill a worker in the middle of its work.

`celery -A tests.e2e.slow_worker worker …` runs the real app, with one step made slow in the
test's worker only: `COHORT_TEST_SLOW` names where (`flush`, `attribute`, `judge`), and the
worker prints `SLOW-HOOK <where>` when it gets there, inside the step's transaction, then
sleeps. Production code has no hook: the patch is applied here, at the worker's first task.
"""

import os
import sys
import time

from celery.signals import task_prerun

from controlplane.celery import app

__all__ = ["app"]

_patched = False


def _stall(where: str) -> None:
    print(f"SLOW-HOOK {where}", flush=True)
    sys.stdout.flush()
    time.sleep(float(os.environ.get("COHORT_TEST_SLOW_SECONDS", "600")))


def _patch(where: str) -> None:
    from django.db import transaction

    if where == "flush":
        from rollout import exposures

        original, calls = exposures.ledger_write, []

        def ledger_write(rows):
            # The second batch stalls after its rows are written, before its commit and trim.
            calls.append(len(rows))
            with transaction.atomic():
                original(rows)
                if len(calls) == 2:
                    _stall(where)

        exposures.ledger_write = ledger_write
    elif where == "attribute":
        from experiments.events import attribution

        original, calls = attribution._attribute_batch, []

        def attribute_batch(events, now):
            settled = original(events, now)
            calls.append(len(events))
            if len(calls) == 2:
                _stall(where)  # the batch's events and exposures are locked, nothing committed
            return settled

        attribution._attribute_batch = attribute_batch
    elif where == "judge":
        from experiments import judge

        original = judge._act

        def act(rollout, verdict, analysis):
            done = original(rollout, verdict, analysis)
            _stall(where)  # rolled back and alerted, in the analysis' uncommitted transaction
            return done

        judge._act = act


@task_prerun.connect
def _slow_down(**kwargs):
    global _patched
    where = os.environ.get("COHORT_TEST_SLOW")
    if where and not _patched:
        _patched = True
        _patch(where)
