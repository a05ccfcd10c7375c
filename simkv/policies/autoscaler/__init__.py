"""Autoscalers: how a pool's capacity follows its load (config group ``autoscaler``)."""

from simkv.policies.autoscaler.elastic_moe import ElasticMoE, ElasticMoEConfig
from simkv.policies.autoscaler.elastic_tp import ElasticTP, ElasticTPConfig
from simkv.policies.autoscaler.energy import EnergyAware, EnergyAwareConfig
from simkv.policies.autoscaler.horizontal import Horizontal, HorizontalConfig
from simkv.policies.autoscaler.interface import (
    Action,
    Autoscaler,
    Drain,
    Launch,
    Resize,
    Restart,
    ScalingConfig,
    SetClock,
)
from simkv.policies.autoscaler.none import NoAutoscaler, NoAutoscalerConfig
from simkv.policies.autoscaler.serverless import Serverless, ServerlessConfig
from simkv.policies.autoscaler.vertical import Vertical, VerticalConfig

__all__ = ["Action", "Autoscaler", "Drain", "ElasticMoE", "ElasticMoEConfig", "ElasticTP",
           "ElasticTPConfig", "EnergyAware", "EnergyAwareConfig", "Horizontal",
           "HorizontalConfig", "Launch", "NoAutoscaler", "NoAutoscalerConfig", "Resize", "Restart",
           "ScalingConfig", "Serverless", "ServerlessConfig", "SetClock", "Vertical", "VerticalConfig"]
