"""Neural networks: estimators (:mod:`.reparam`), Bayesian layers (:mod:`.bayes`), statistics pooling
(:mod:`.pooling`), the x-vector models (:mod:`.tdnn`) and the training objective (:mod:`.objective`)."""

from spkver.nn.bayes import (BayesConv1d, BayesLinear, GaussianPrior, ScaleMixturePrior, make_prior,
                             sampling)
from spkver.nn.objective import XVectorObjective
from spkver.nn.pooling import StatsPooling, stats_pool
from spkver.nn.tdnn import MODELS, BayesXVector, FusedXVector, XVector, build_model

__all__ = ["BayesConv1d", "BayesLinear", "GaussianPrior", "ScaleMixturePrior", "make_prior", "sampling",
           "XVectorObjective", "StatsPooling", "stats_pool", "MODELS", "BayesXVector", "FusedXVector",
           "XVector", "build_model"]
