"""Links whose bandwidth concurrent transfers share, and the transfers on them.

A transfer crosses one or more links (an SSD read reaches a GPU over the drive's link and
the GPU's PCIe link). Every link divides its bandwidth equally among the transfers on it
(processor sharing), and a transfer moves at the rate of its most crowded link:
``min(bandwidth / transfers on it)`` over its path. Rates change only when a transfer starts
or ends, so the fabric needs one SimPy event per start and per end, never per byte: between
two such events every transfer's progress is linear.

NOTE: the min-of-fair-shares rate is the usual approximation of max-min fairness; on a
single link (the case the tests check) it is exact: two transfers started together on one
link each finish at twice their solo time. On paths of several links it is not
work-conserving: a transfer held back by one link leaves part of its fair share of the others
unused, which nobody takes. Its bound: every transfer's rate is at most its max-min rate
(on every link of its path a max-min allocation gives each crossing transfer at least the
equal share, so the min over the path is a lower bound of the max-min rate), so transfers
never finish earlier than under max-min fairness, and a link's unused share is at most
``bandwidth x (1 - 1/transfers on it)``. ``Fabric(max_min=True)`` (``memory.link_sharing=
max_min``) computes the max-min fair rates instead, by progressive filling (the bottleneck
link's equal share is fixed for the transfers crossing it, their rates taken off every other
link they cross, repeated): work-conserving, and equal to the approximation whenever every
transfer's most crowded link is shared only by transfers for which it is also the most
crowded (one link, or identical paths). tests/test_links.py checks both on the case where
they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from simkv.engine.events import NORMAL, Wakeup

# Bytes left below which a transfer counts as done (float round-off of rate x time).
_EPS_BYTES = 1e-3
_EPS_S = 1e-9
_INF = float("inf")
_NAN = float("nan")
# Collectives never hold more than this share of a link: transfers keep a trickle (assumed).
MAX_RESERVED = 0.95


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
    # Bandwidth held by collectives running on the link (collectives.on_fabric; 0 otherwise):
    # transfers share what is left. Their bytes are counted apart from transfers'.
    reserved: float = 0.0
    collective_bytes: float = 0.0
    requested: float = 0.0  # sum of the collectives' rates; reserved is it, capped


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
                 on_transfer: Callable[[Transfer], None] | None = None,
                 max_min: bool = False) -> None:
        self.env = env
        # Max-min fair rates (progressive filling) instead of the min of equal shares.
        self.max_min = max_min
        self.active: list[Transfer] = []
        self._last = 0.0
        self._epoch = 0
        self.on_transfer = on_transfer
        self.transfers = 0
        # Most transfers one link ever carried at once: at 1, sharing rules never acted.
        self.peak_link_share = 0
        # The cluster's engine.replica.PlanNow (set by engine/cluster.py; None elsewhere).
        self.plan_now: Any = None

    def start(self, nbytes: float, links: Sequence[Link], on_done: Callable[[Transfer], None] | None,
              what: str = "") -> Transfer:
        """Begin moving ``nbytes`` over ``links``; ``on_done(transfer)`` runs when it lands."""
        if not links:
            raise ValueError("a transfer needs at least one link")
        now = self.env._now  # (env.now is a property of SimPy's, interpreted)
        self._progress(now)
        nbytes = float(nbytes)
        t = Transfer(nbytes, tuple(links), on_done, now, nbytes, 0.0, _NAN, what)
        self.transfers += 1
        peak = self.peak_link_share
        for link in t.links:
            active = link.active
            if active == 0:
                link._busy_since = now
            active += 1
            link.active = active
            if active > peak:
                peak = active
            link.bytes_moved += nbytes
        self.peak_link_share = peak
        self.active.append(t)
        self._reschedule()
        return t

    def reserve(self, changes: Sequence[tuple[Link, float]]) -> None:
        """Add ``rate`` (bytes/s; negative releases) to each link's reserved bandwidth, at
        most ``MAX_RESERVED`` of it, and re-rate the transfers in flight from now on."""
        self._progress(self.env.now)
        for link, rate in changes:
            link.requested += rate
            if link.requested < 1e-9 * link.bandwidth:  # float residue of a full release
                link.requested = 0.0
            link.reserved = min(link.requested, MAX_RESERVED * link.bandwidth)
        if self.active:
            self._reschedule()

    def cancel(self, links: set[str]) -> tuple[int, float]:
        """Drop every transfer in flight that crosses one of the named links (its GPU or node
        was lost): it never lands, its callback never runs. Returns (transfers, bytes left)."""
        return self._drop(lambda t: any(link.name in links for link in t.links))

    def cancel_transfers(self, ids: set[int]) -> tuple[int, float]:
        """Drop the transfers in flight whose ``id()`` is in ``ids`` (their source is gone)."""
        return self._drop(lambda t: id(t) in ids)

    def _drop(self, doomed: Callable[[Transfer], bool]) -> tuple[int, float]:
        now = self.env.now
        self._progress(now)
        gone = [t for t in self.active if doomed(t)]
        if not gone:
            return 0, 0.0
        self.active = [t for t in self.active if t not in gone]
        for t in gone:
            for link in t.links:
                link.active -= 1
                link.bytes_moved -= max(t.left, 0.0)  # what never crossed it
                if link.active == 0:
                    link.busy_s += now - link._busy_since
        self._reschedule()
        return len(gone), float(sum(max(t.left, 0.0) for t in gone))

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
        soonest = _INF
        if self.max_min:
            _max_min_rates(self.active)
            for t in self.active:
                left = t.left
                if left < 0.0:  # (as max(left, 0.0): -0.0 stays -0.0)
                    left = 0.0
                s = left / t.rate
                if s < soonest:  # (as min(soonest, s): the first of equal values)
                    soonest = s
        else:
            for t in self.active:
                # NOTE: bandwidth - 0.0 is bandwidth exactly: without collectives on the
                # fabric the rates are the same floats as before reservations existed.
                # The min of the links' shares, written out as min() computes it: the
                # first share, replaced only by a strictly smaller one.
                links = t.links
                first = links[0]
                rate = (first.bandwidth - first.reserved) / first.active
                for link in links:
                    share = (link.bandwidth - link.reserved) / link.active
                    if share < rate:
                        rate = share
                t.rate = rate
                left = t.left
                if left < 0.0:
                    left = 0.0
                s = left / rate
                if s < soonest:
                    soonest = s
        Wakeup(self.env, soonest, NORMAL, self._tick, self._epoch)

    def _tick(self, event: Wakeup) -> None:
        if event.tag != self._epoch:
            return
        now = self.env._now
        self._progress(now)
        # NOTE: done when under a byte or a nanosecond from the end: simulated time is a
        # float, so a wake-up for a remainder below its resolution would never advance it.
        done: list[Transfer] = []
        going: list[Transfer] = []
        for t in self.active:
            if t.left <= _EPS_BYTES or t.left <= t.rate * _EPS_S:
                done.append(t)
            else:
                going.append(t)
        self.active = going
        for t in done:
            for link in t.links:
                link.active -= 1
                if link.active == 0:
                    link.busy_s += now - link._busy_since
        self._reschedule()
        for t in done:
            latency = max([link.latency_s for link in t.links])
            t.end = now + latency
            if latency > 0:
                Wakeup(self.env, latency, NORMAL, self._landed, t)  # type: ignore[arg-type]
            else:
                self._land(t)

    def _landed(self, event: Wakeup) -> None:
        """A transfer's latency has passed (the wake-up's tag is the transfer): it lands.

        Its callback is this event's last act, so replicas it pokes reserve their plans'
        event ids in ``plan_now`` (engine/replica.PlanNow, as an arrival does) and a lone
        plan due when no other event is runs at once: the same plan at the same time, one
        SimPy event fewer (a disaggregated run's prefill instance, idle when its held KV
        has landed, replans once per request)."""
        held = self.plan_now
        if held is None or held.open:
            self._land(event.tag)  # type: ignore[arg-type]
            return
        held.open = True
        self._land(event.tag)  # type: ignore[arg-type]
        held.open = False
        if held.items:
            held.flush()

    def _land(self, t: Transfer) -> None:
        if self.on_transfer is not None:
            self.on_transfer(t)
        if t.on_done is not None:
            t.on_done(t)


def _max_min_rates(transfers: list[Transfer]) -> None:
    """Set every transfer's rate to its max-min fair share (progressive filling).

    Repeatedly: the link whose remaining bandwidth divided by its unfixed transfers is the
    smallest is a bottleneck; its unfixed transfers get that share, which is taken off every
    other link they cross. O(links x transfers) per call; transfers in flight are few.
    NOTE: ties between links are broken by the order links are first met (deterministic:
    transfers are kept in start order).
    """
    left: dict[int, float] = {}
    count: dict[int, int] = {}
    links: dict[int, Link] = {}
    for t in transfers:
        t.rate = -1.0
        for link in t.links:
            k = id(link)
            if k not in links:
                links[k] = link
                left[k] = link.bandwidth - link.reserved
                count[k] = 0
            count[k] += 1
    unfixed = len(transfers)
    while unfixed:
        share, bottleneck = float("inf"), -1
        for k, n in count.items():
            if n and left[k] / n < share:
                share, bottleneck = max(left[k], 0.0) / n, k
        for t in transfers:
            if t.rate < 0 and any(id(link) == bottleneck for link in t.links):
                t.rate = share
                unfixed -= 1
                for link in t.links:
                    k = id(link)
                    left[k] -= share
                    count[k] -= 1
