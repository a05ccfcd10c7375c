"""The memory tiers of a node below the GPUs' HBM, and the node's links, from a YAML profile.

A node profile (``hardware_profiles/nodes/*.yaml``, schema in docs/MEMORY.md) gives each tier
its capacity, read and write bandwidth and latency, each with a unit and a source; a CSD
also has an internal flash bandwidth and compute throughput (InstInfer). Loading converts to
SI units and names the file and key of anything wrong, like the GPU profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simkv.entities.hardware import ProfileError, _quantity, read_profile_doc, shipped_profiles

TIERS = ("dram", "ssd", "csd")
_TIER_KEYS = {"capacity": "bytes", "read_bandwidth": "bandwidth", "write_bandwidth": "bandwidth",
              "latency": "time"}
_CSD_KEYS = {"internal_bandwidth": "bandwidth", "compute": "flops"}
_NET_KEYS = {"bandwidth": "bandwidth", "latency": "time"}


@dataclass(frozen=True, slots=True)
class TierSpec:
    """One storage tier of a node, in SI units (bytes, bytes/s, seconds, FLOP/s)."""

    name: str
    capacity: float
    read_bandwidth: float
    write_bandwidth: float
    latency_s: float
    internal_bandwidth: float = 0.0
    compute_flops: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeProfile:
    name: str
    gpus_per_node: int
    tiers: dict[str, TierSpec]
    network_bandwidth: float
    network_latency_s: float
    sources: dict[str, str]
    path: str = ""
    # GPU-direct network per GPU (RDMA NICs of the compute fabric): expert-parallel
    # all-to-all and weights from a peer across nodes. Absent: the node's network, shared.
    gpu_network_bandwidth: float = 0.0
    gpu_network_latency_s: float = 0.0


def _section(doc: Any, where: str, keys: dict[str, str], optional: bool = False
             ) -> tuple[dict[str, float], dict[str, str]]:
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: expected a mapping")
    extra = set(doc) - set(keys)
    if extra:
        raise ProfileError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(keys)}")
    missing = set(keys) - set(doc)
    if missing and not optional:
        raise ProfileError(f"{where}: missing {sorted(missing)}")
    values, sources = {}, {}
    for key, dim in keys.items():
        if key in doc:
            values[key], sources[key] = _quantity(doc[key], f"{where}.{key}", dim)
    return values, sources


def parse_node_profile(doc: Any, path: str) -> NodeProfile:
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    if doc.get("schema_version") != 1:
        raise ProfileError(f"{path}: schema_version must be 1, got {doc.get('schema_version')!r}")
    allowed = {"schema_version", "name", "gpus_per_node", "network", "gpu_network", "provenance",
               "notes", *TIERS}
    unknown = set(doc) - allowed
    if unknown:
        raise ProfileError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    gpus = doc.get("gpus_per_node")
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ProfileError(f"{path}: gpus_per_node must be a positive integer, got {gpus!r}")
    tiers: dict[str, TierSpec] = {}
    sources: dict[str, str] = {}
    for tier in TIERS:
        if tier not in doc:
            continue
        keys = {**_TIER_KEYS, **_CSD_KEYS} if tier == "csd" else _TIER_KEYS
        v, s = _section(doc[tier], f"{path}: {tier}", keys)
        sources.update({f"{tier}.{k}": src for k, src in s.items()})
        tiers[tier] = TierSpec(tier, v["capacity"], v["read_bandwidth"], v["write_bandwidth"],
                               v["latency"], v.get("internal_bandwidth", 0.0), v.get("compute", 0.0))
    if "network" not in doc:
        raise ProfileError(f"{path}: missing 'network'")
    v, s = _section(doc["network"], f"{path}: network", _NET_KEYS)
    sources.update({f"network.{k}": src for k, src in s.items()})
    g = {"bandwidth": v["bandwidth"] / gpus, "latency": v["latency"]}
    if "gpu_network" in doc:
        g, s = _section(doc["gpu_network"], f"{path}: gpu_network", _NET_KEYS)
        sources.update({f"gpu_network.{k}": src for k, src in s.items()})
    return NodeProfile(str(doc.get("name", Path(path).stem)), gpus, tiers, v["bandwidth"],
                       v["latency"], sources, path, g["bandwidth"], g["latency"])


def shipped_node_profiles() -> list[str]:
    return shipped_profiles("nodes")


def load_node_profile(profile: str = "dgx_h100", path: str | None = None) -> NodeProfile:
    """A shipped node profile by name, or any node profile file by path."""
    return parse_node_profile(*read_profile_doc(profile, path, "node", "nodes"))
