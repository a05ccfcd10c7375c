"""How much KV a sequence keeps and what that costs (config group ``kv_policy``)."""

from simkv.policies.kv_policy.elastic_cache import ElasticCache, ElasticCacheConfig
from simkv.policies.kv_policy.epicache import EpiCache, EpiCacheConfig
from simkv.policies.kv_policy.full import FullKV, FullKVConfig
from simkv.policies.kv_policy.h2o import H2O, H2OConfig
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicy, KVPolicyBase
from simkv.policies.kv_policy.leoam import LeoAM, LeoAMConfig
from simkv.policies.kv_policy.scalekv import ScaleKV, ScaleKVConfig
from simkv.policies.kv_policy.sentencekv import SentenceKV, SentenceKVConfig

__all__ = [
           "H2O",
           "AccuracyTable",
           "ElasticCache",
           "ElasticCacheConfig",
           "EpiCache",
           "EpiCacheConfig",
           "FullKV",
           "FullKVConfig",
           "H2OConfig",
           "KVPolicy",
           "KVPolicyBase",
           "LeoAM",
           "LeoAMConfig",
           "ScaleKV",
           "ScaleKVConfig",
           "SentenceKV",
           "SentenceKVConfig",
]
