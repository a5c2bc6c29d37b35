"""Usage per person (today, this month, UTC) and optional daily budgets.

Budgets bind the people a server's owner shares it with: on a JupyterHub server the
owner's process holds the provider keys, so per-person caps are how the owner keeps
thirty students from spending the whole allowance.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from r3nb.errors import RateLimited

from .store import StoreInterface

BUDGET_KEYS = {"tokens_per_day", "cost_per_day"}
_EMPTY = {"tokens": 0, "cost": 0.0, "messages": 0}


def validate_budgets(budgets: dict[str, Any]) -> dict[str, float]:
    unknown = set(budgets) - BUDGET_KEYS
    if unknown:
        raise ValueError(
            f"c.R3nbApp.budgets: unknown key(s) {sorted(unknown)}; known: {sorted(BUDGET_KEYS)}"
        )
    out = {}
    for key, value in budgets.items():
        if not isinstance(value, int | float) or value < 0:
            raise ValueError(f"c.R3nbApp.budgets[{key!r}] must be a number >= 0")
        out[key] = float(value)
    return out


def _day_start(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(now: dt.datetime) -> dt.datetime:
    return _day_start(now).replace(day=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def usage_report(store: StoreInterface, who: str, is_admin: bool) -> dict[str, Any]:
    now = _now()
    today = await store.usage(_day_start(now).timestamp())
    month = await store.usage(_month_start(now).timestamp())
    report: dict[str, Any] = {
        "user": who,
        "today": today.get(who, dict(_EMPTY)),
        "month": month.get(who, dict(_EMPTY)),
        "resets_at": (_day_start(now) + dt.timedelta(days=1)).isoformat(),
    }
    if is_admin:
        report["users"] = {
            name: {"today": today.get(name, dict(_EMPTY)), "month": month[name]}
            for name in sorted(month)
        }
    return report


async def check_budgets(store: StoreInterface, who: str, budgets: dict[str, float]) -> None:
    """Raise ``RateLimited`` naming the budget that ran out and when it resets."""
    if not budgets:
        return
    now = _now()
    spent = (await store.usage(_day_start(now).timestamp(), who)).get(who, _EMPTY)
    reset = _day_start(now) + dt.timedelta(days=1)
    for key, used in (("tokens_per_day", spent["tokens"]), ("cost_per_day", spent["cost"])):
        limit = budgets.get(key)
        if limit is not None and used >= limit:
            what = "tokens" if key == "tokens_per_day" else "cost (USD)"
            raise RateLimited(
                f"daily budget reached: {used:g} of {limit:g} {what} used today "
                f"(c.R3nbApp.budgets[{key!r}]); it resets at {reset:%H:%M} UTC",
                retry_after=(reset - now).total_seconds(),
            )
