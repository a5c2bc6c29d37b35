"""Whether a request may start work now: per-person limits and one reply at a time.

Every refusal is a 4xx a person can act on (429 with a wait, 409 naming who can end
it), and every 429 is counted where health reports it (``counters["rate_limited"]``).
"""

from __future__ import annotations

from collections.abc import Callable

from r3nb.errors import Conflict, RateLimited

from . import limits, usage
from .caller import Caller
from .settings import Settings
from .store import StoreInterface
from .streams import StreamHub


class Admission:
    """The limits a send, a regenerate or a new conversation must pass first."""

    def __init__(self, settings: Settings, store: StoreInterface, hub: StreamHub) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.rate_limiter = limits.RateLimiter(settings.rate_limit_per_minute)
        self.creation_limiter = limits.RateLimiter(
            settings.rate_limit_per_minute, what="new conversations"
        )

    def check_prompt_size(self, content: str, attachments: list[dict[str, str]] | None) -> None:
        """The prompt and its attached context fit ``max_prompt_chars`` (400 if not)."""
        size = len(content) + sum(len(a.get("summary", "")) for a in attachments or [])
        limits.check_prompt_size(size, self.settings.max_prompt_chars)

    async def admit(self, caller: Caller) -> None:
        """Per-person limits: rate, concurrent streams, daily budgets (429 each)."""
        self._limit(lambda: self.rate_limiter.check(caller.name))
        self._limit(
            lambda: limits.check_concurrent(
                self.hub.active_for(caller.name), self.settings.max_concurrent_streams
            )
        )
        try:
            await usage.check_budgets(self.store, caller.name, self.settings.budgets)
        except RateLimited:
            self.hub.counters["rate_limited"] += 1
            raise

    def admit_creation(self, caller: Caller) -> None:
        """Creations count in the person's limits: an unlimited loop of them would bury
        everyone's conversations in the picker."""
        self._limit(lambda: self.creation_limiter.check(caller.name))

    def one_reply_at_a_time(self, cid: str) -> None:
        """A second prompt while a reply is being written would interleave the turns
        (and the model would see a question without its answer): refuse it, saying why
        and who can end the wait."""
        for stream in self.hub.live.values():
            if stream.conversation_id == cid and stream.final is None:
                raise Conflict(
                    f"a reply is still being written in this conversation (asked by "
                    f"{stream.author or 'someone'}); wait for it to finish, or stop it",
                    message_id=stream.message_id,
                )

    def _limit(self, check: Callable[[], None]) -> None:
        """Run one limit check, counting refusals for health."""
        try:
            check()
        except RateLimited:
            self.hub.counters["rate_limited"] += 1
            raise
