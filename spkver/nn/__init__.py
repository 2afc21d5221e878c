"""Neural networks: estimators (:mod:`.reparam`), Bayesian layers (:mod:`.bayes`) and :func:`bayesianize` for any
network (:mod:`.bayesianize`), statistics pooling (:mod:`.pooling`), classifiers (:mod:`.heads`), the model interface
(:mod:`.model`), the x-vector models and the registry (:mod:`.tdnn`), SpeechBrain's ECAPA-TDNN and x-vector
(:mod:`.ecapa`) and the training objective (:mod:`.objective`)."""

from spkver.nn.bayes import (BayesConv1d, BayesLinear, GaussianPrior, ScaleMixturePrior, make_prior,
                             sampling)
from spkver.nn.bayesianize import bayesianize
from spkver.nn.ecapa import ECAPA, SBXVector
from spkver.nn.objective import XVectorObjective
from spkver.nn.pooling import StatsPooling, stats_pool
from spkver.nn.tdnn import MODELS, BayesXVector, FusedXVector, XVector, build_model

__all__ = ["BayesConv1d", "BayesLinear", "GaussianPrior", "ScaleMixturePrior", "make_prior", "sampling",
           "bayesianize", "ECAPA", "SBXVector", "XVectorObjective", "StatsPooling", "stats_pool", "MODELS",
           "BayesXVector", "FusedXVector", "XVector", "build_model"]
