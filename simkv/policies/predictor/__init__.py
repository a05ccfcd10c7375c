"""Output-length predictors (config group ``predictor``): what load-aware routers and
schedulers believe a request will generate. A real engine does not know a request's output
length before it ends, so no policy reads the trace's true length unless the chosen
predictor says ``oracle``."""

from simkv.policies.predictor.interface import OutputPredictor
from simkv.policies.predictor.noisy import NoisyOraclePredictor, NoisyOraclePredictorConfig
from simkv.policies.predictor.predictors import (
    FixedPredictor,
    FixedPredictorConfig,
    OraclePredictor,
    OraclePredictorConfig,
    RunningMeanPredictor,
    RunningMeanPredictorConfig,
)

__all__ = ["FixedPredictor", "FixedPredictorConfig", "NoisyOraclePredictor",
           "NoisyOraclePredictorConfig", "OraclePredictor", "OraclePredictorConfig",
           "OutputPredictor", "RunningMeanPredictor", "RunningMeanPredictorConfig"]
