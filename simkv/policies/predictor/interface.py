"""The output-predictor contract: an estimate of a request's output tokens, from what a
serving system has seen so far.

One predictor serves the whole cluster (built once, like the router): routers read it to
weigh an instance's outstanding work (``least_work``, and every router that reads
``ReplicaLoad.outstanding_tokens``), schedulers that plan by sequence length read it too
(BatchLLM's decode-first order and memory-centric admission). ``observe`` is told of every
request that finished, so a learning predictor improves as the run goes on; requests the
engine rejected or the trace marks failed are not observed (they generated nothing).
"""

from __future__ import annotations

from typing import Protocol

from simkv.entities.request import Request


class OutputPredictor(Protocol):
    def predict(self, req: Request) -> int:
        """Output tokens expected of ``req`` (at least 1). Must not change ``req``."""
        ...

    def observe(self, req: Request) -> None:
        """``req`` finished, having generated ``req.output_tokens`` tokens."""
        ...
