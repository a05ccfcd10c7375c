"""Speculative decoding (config group ``speculative``): none, draft, eagle, ngram."""

from simkv.policies.speculative.methods import (
    DraftModel,
    DraftModelConfig,
    Eagle,
    EagleConfig,
    Ngram,
    NgramConfig,
    NoSpeculation,
    NoSpeculationConfig,
    Speculation,
)

__all__ = ["DraftModel", "DraftModelConfig", "Eagle", "EagleConfig", "Ngram", "NgramConfig",
           "NoSpeculation", "NoSpeculationConfig", "Speculation"]
