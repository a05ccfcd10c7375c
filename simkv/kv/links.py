"""Links whose bandwidth concurrent transfers share, and the transfers on them.

A transfer crosses one or more links (an SSD read reaches a GPU over the drive's link and
the GPU's PCIe link). Every link divides its bandwidth equally among the transfers on it
(processor sharing), and a transfer moves at the rate of its most crowded link:
``min(bandwidth / transfers on it)`` over its path. Rates change only when a transfer starts
or ends, so the fabric needs one SimPy event per start and per end, never per byte: between
two such events every transfer's progress is linear.

NOTE: the min-of-fair-shares rate is the usual approximation of max-min fairness; on a
single link (the case the tests check) it is exact: two transfers started together on one
link each finish at twice their solo time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import simpy

from simkv.engine.events import NORMAL, Wakeup

# Bytes left below which a transfer counts as done (float round-off of rate x time).
_EPS_BYTES = 1e-3
_EPS_S = 1e-9


@dataclass(slots=True, eq=False)
class Link:
    """A directed link: PCIe of a replica's GPUs, an SSD's read or write side, a NIC."""

    name: str
    bandwidth: float  # bytes per second
    latency_s: float = 0.0
    active: int = 0
    bytes_moved: float = 0.0
    busy_s: float = 0.0
    _busy_since: float = 0.0


@dataclass(slots=True, eq=False)
class Transfer:
    nbytes: float
    links: tuple[Link, ...]
    on_done: Callable[[Transfer], None] | None
    start: float
    left: float = 0.0
    rate: float = 0.0
    end: float = float("nan")
    what: str = ""


class Fabric:
    """All transfers of a cluster; one pending wake-up for the next transfer to finish."""

    def __init__(self, env: simpy.Environment,
                 on_transfer: Callable[[Transfer], None] | None = None) -> None:
        self.env = env
        self.active: list[Transfer] = []
        self._last = 0.0
        self._epoch = 0
        self.on_transfer = on_transfer
        self.transfers = 0

    def start(self, nbytes: float, links: Sequence[Link], on_done: Callable[[Transfer], None] | None,
              what: str = "") -> Transfer:
        """Begin moving ``nbytes`` over ``links``; ``on_done(transfer)`` runs when it lands."""
        if not links:
            raise ValueError("a transfer needs at least one link")
        now = self.env.now
        self._progress(now)
        t = Transfer(float(nbytes), tuple(links), on_done, now, left=float(nbytes), what=what)
        self.transfers += 1
        for link in t.links:
            if link.active == 0:
                link._busy_since = now
            link.active += 1
            link.bytes_moved += t.nbytes
        self.active.append(t)
        self._reschedule()
        return t

    def _progress(self, now: float) -> None:
        dt = now - self._last
        if dt > 0:
            for t in self.active:
                t.left -= t.rate * dt
        self._last = now

    def _reschedule(self) -> None:
        self._epoch += 1
        if not self.active:
            return
        soonest = float("inf")
        for t in self.active:
            t.rate = min(link.bandwidth / link.active for link in t.links)
            soonest = min(soonest, max(t.left, 0.0) / t.rate)
        Wakeup(self.env, soonest, NORMAL, self._tick, self._epoch)

    def _tick(self, event: Wakeup) -> None:
        if event.tag != self._epoch:
            return
        now = self.env.now
        self._progress(now)
        # NOTE: done when under a byte or a nanosecond from the end: simulated time is a
        # float, so a wake-up for a remainder below its resolution would never advance it.
        done = [t for t in self.active if t.left <= _EPS_BYTES or t.left <= t.rate * _EPS_S]
        self.active = [t for t in self.active if not (t.left <= _EPS_BYTES or t.left <= t.rate * _EPS_S)]
        for t in done:
            for link in t.links:
                link.active -= 1
                if link.active == 0:
                    link.busy_s += now - link._busy_since
        self._reschedule()
        for t in done:
            latency = max(link.latency_s for link in t.links)
            t.end = now + latency
            if latency > 0:
                Wakeup(self.env, latency, NORMAL, lambda _, t=t: self._land(t))
            else:
                self._land(t)

    def _land(self, t: Transfer) -> None:
        if self.on_transfer is not None:
            self.on_transfer(t)
        if t.on_done is not None:
            t.on_done(t)
