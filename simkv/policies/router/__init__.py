"""Routers: which replica receives a request (config group ``router``)."""

from simkv.policies.router.interface import ReplicaLoad, Router
from simkv.policies.router.least_outstanding import LeastOutstanding, LeastOutstandingConfig
from simkv.policies.router.least_work import LeastWork, LeastWorkConfig
from simkv.policies.router.power_of_two import PowerOfTwo, PowerOfTwoConfig
from simkv.policies.router.prefix_affinity import PrefixAffinity, PrefixAffinityConfig
from simkv.policies.router.round_robin import RoundRobin, RoundRobinConfig
from simkv.policies.router.session_affinity import SessionAffinity, SessionAffinityConfig
from simkv.policies.router.slo_aware import SLOAware, SLOAwareConfig

__all__ = [
    "LeastOutstanding",
    "LeastOutstandingConfig",
    "LeastWork",
    "LeastWorkConfig",
    "PowerOfTwo",
    "PowerOfTwoConfig",
    "PrefixAffinity",
    "PrefixAffinityConfig",
    "ReplicaLoad",
    "RoundRobin",
    "RoundRobinConfig",
    "Router",
    "SLOAware",
    "SLOAwareConfig",
    "SessionAffinity",
    "SessionAffinityConfig",
]
