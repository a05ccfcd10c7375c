"""Energy and power of the simulated GPUs (issue 24; docs/ENERGY.md).

params.py reads a GPU's power parameters with their sources, work.py counts what each engine
step does to a GPU (FLOPs, HBM bytes, link bytes), model.py turns work and time into power
and applies a locked clock or a power cap, accounting.py hooks the replica loop, and
summary.py writes summary.json's ``energy`` section from the same instance transitions as
GPU-hours. Nothing here is built unless ``energy.enabled``.
"""
