"""Recording off the request path: each exchange becomes an llm.call event for the sink, and
a forwarded call is settled with the answerer, in a worker thread after the reply is sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from stillroom.config import Price
from stillroom.events import Event
from stillroom.monitors.llm import Exchange, llm_call_event, response_text
from stillroom.service.gateway.answerer import Answerer, Decision

log = logging.getLogger("stillroom.gateway")

Sink = Callable[[Event], object]  # its return value (an event id, say) is ignored


class Recorder:
    """A failure here is logged and never reaches the client."""

    def __init__(
        self, sink: Sink, prices: Mapping[str, Price], answerer: Answerer | None = None
    ) -> None:
        self.sink = sink
        self.prices = prices
        self.answerer = answerer

    def submit(self, exchange: Exchange, decision: Decision | None = None) -> None:
        """Record (and settle, when `decision` is given) without blocking the event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.finish(exchange, decision)
            return
        loop.run_in_executor(None, self.finish, exchange, decision)

    def finish(self, exchange: Exchange, decision: Decision | None = None) -> None:
        try:
            self.sink(llm_call_event(exchange, self.prices))
        except Exception:  # recording must never break serving: log it with its traceback
            log.exception("could not record a call to %s", exchange.endpoint)
        if decision is None or self.answerer is None:
            return
        ok = exchange.status == 200
        text = response_text(exchange.provider, exchange.response) if ok else None
        try:
            self.answerer.settle(decision, text, exchange.latency_ms or 0.0)
        except Exception:  # the answerer's bug must not stop the next call being recorded
            log.exception("the answerer could not settle a call for task %s", decision.task)
