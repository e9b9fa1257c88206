"""What became of an approved change: the outcomes the apply engine returns and sends with
allocator.signals.change_settled. Pure, no imports from the rest of the app, so both the engine
and requests_app (whose workflow maps each outcome to a request status) can use it."""

from enum import StrEnum


class Outcome(StrEnum):
    # Members equal their strings ("applied" == Outcome.APPLIED), so receivers and task results
    # that compare or store plain strings keep working.
    APPLIED = "applied"  # allocated: the Allocation rows exist
    WAITING = "waiting"  # in the pool's waiting queue until capacity frees up
    NEEDS_REVIEW = "needs_review"  # the share rule holds at apply time: back to executives
    FAILED = "failed"  # applying raised, or the change can no longer be served
    RETRIED = "retried"  # compute ops retried a failed apply: pending again
