"""CDR rating from a billing plan: per-minute rate, billing increment, minimum charge, currency.

- duration = started -> ended, talk = answered -> ended, both rounded up to whole seconds;
- no plan: the CDR carries no cost (billable seconds = talk seconds);
- ``free`` plan, or an unanswered call: cost 0 in the plan's currency (no minimum charge);
- ``per_minute``: billable = talk rounded up to the increment; cost = max(minimum, rate * billable / 60),
  rounded half-up to 6 decimal places (the ``numeric(18, 6)`` of ``cdr_records.cost``).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_HALF_UP, Decimal

from storage.ports import BillingPlan, NewCdr, Rating

COST_QUANTUM = Decimal("0.000001")


def whole_seconds(later: dt.datetime, earlier: dt.datetime) -> int:
    """Seconds between two instants, rounded up (a started second counts), never negative."""
    delta = later - earlier
    micros = delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
    return max(0, math.ceil(micros / 1_000_000))


class TariffRater:
    """The ``CdrRater`` the CDR repositories use by default."""

    def rate(self, cdr: NewCdr, plan: BillingPlan | None) -> Rating:
        duration = whole_seconds(cdr.ended_at, cdr.started_at)
        talk = whole_seconds(cdr.ended_at, cdr.answered_at) if cdr.answered_at else 0
        if plan is None:
            return Rating(duration, talk, None, None, None)
        if plan.tariff_model == "free" or talk == 0:
            return Rating(duration, talk, Decimal("0.000000"), plan.currency, plan)
        increment = plan.billing_increment_seconds
        billable = math.ceil(talk / increment) * increment
        cost = max(plan.minimum_charge, plan.per_minute_rate * billable / 60)
        return Rating(duration, billable, cost.quantize(COST_QUANTUM, ROUND_HALF_UP), plan.currency, plan)
