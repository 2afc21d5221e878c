"""Training objective of the (Bayesian) x-vector: the minibatch form of the negative ELBO
(Blundell et al. 2015, eq. 8, with the KL spread evenly over an epoch):

    loss = mean_batch CE(logits, labels) + w(step) * KL(q || p) / n_train

``n_train`` is the number of training examples per epoch: each of the ``n_train / batch`` steps of
an epoch carries ``batch / n_train`` of the KL, so one epoch sums to the full negative ELBO (divided
by ``n_train``). Dividing by the batch size instead would over-weight the KL ``n_train / batch`` times.
``w(step)`` rises linearly from 0 to ``kl_weight`` over ``kl_warmup_steps`` ("KL annealing",
Bowman et al. 2016; Sonderby et al. 2016).

The classification term is the cross-entropy of the logits (``loss="ce"``) or the additive angular margin
softmax (``loss="aam"``, AAM-softmax / ArcFace, Deng et al. 2019; Xiang et al. 2019 for speakers): the logits
are then cosines (a model with ``classifier="cosine"``), the target's angle gets the margin ``m(step)`` and
all are scaled by ``scale``, through SpeechBrain's ``AdditiveAngularMargin`` and ``LogSoftmaxWrapper``. The
margin rises linearly from 0 to ``margin`` over ``margin_ramp_steps`` (0: the full margin from the start),
which keeps the first steps of a fresh network trainable.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["XVectorObjective", "LOSSES"]

LOSSES = ("ce", "aam")


class XVectorObjective:
    """``__call__(model, logits (batch, classes), labels (batch,), step) -> (loss, stats)``.

    ``stats`` holds floats: ``ce`` (the mean classification loss: cross-entropy, with the angular margin for
    ``aam``), ``kl`` (the model's summed KL, 0 for a baseline), ``kl_weight`` (``w(step)``), ``acc`` (top-1
    accuracy of the batch) and, for ``aam``, ``margin`` (``m(step)``).
    """

    def __init__(self, n_train: int, kl_weight: float = 1.0, kl_warmup_steps: int = 0, loss: str = "ce",
                 margin: float = 0.2, scale: float = 30.0, margin_ramp_steps: int = 0):
        if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1:
            raise ValueError(f"XVectorObjective: n_train must be a positive integer, got {n_train!r}")
        if not kl_weight >= 0.0:
            raise ValueError(f"XVectorObjective: kl_weight must be >= 0, got {kl_weight!r}")
        if int(kl_warmup_steps) != kl_warmup_steps or kl_warmup_steps < 0:
            raise ValueError(f"XVectorObjective: kl_warmup_steps must be an integer >= 0, got {kl_warmup_steps!r}")
        if loss not in LOSSES:
            raise ValueError(f"XVectorObjective: unknown loss {loss!r}; valid: {list(LOSSES)}")
        if not (0.0 <= margin < math.pi / 2 and scale > 0.0):
            raise ValueError(f"XVectorObjective: need 0 <= margin < pi / 2 and scale > 0, got {margin}, {scale}")
        if int(margin_ramp_steps) != margin_ramp_steps or margin_ramp_steps < 0:
            raise ValueError(f"XVectorObjective: margin_ramp_steps must be an integer >= 0, got {margin_ramp_steps!r}")
        self.n_train = int(n_train)
        self.kl_weight = float(kl_weight)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.loss, self.margin, self.scale = loss, float(margin), float(scale)
        self.margin_ramp_steps = int(margin_ramp_steps)
        self._aam: tuple | None = None  # (margin, SpeechBrain LogSoftmaxWrapper(AdditiveAngularMargin))

    def weight(self, step: int) -> float:
        """``w(step) = kl_weight * min(1, step / kl_warmup_steps)`` (``kl_weight`` without warm-up)."""
        if step < 0:
            raise ValueError(f"XVectorObjective: step must be >= 0, got {step}")
        if self.kl_warmup_steps == 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, step / self.kl_warmup_steps)

    def margin_at(self, step: int) -> float:
        """``m(step) = margin * min(1, step / margin_ramp_steps)`` (``margin`` without a ramp)."""
        if self.margin_ramp_steps == 0:
            return self.margin
        return self.margin * min(1.0, max(step, 0) / self.margin_ramp_steps)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, step: int) -> tuple:
        """``(mean loss, margin | None)`` of ``logits (batch, classes)`` (float32)."""
        if self.loss == "ce":
            return F.cross_entropy(logits, labels), None
        if bool((logits.detach().abs() > 1.0 + 1e-4).any()):
            raise ValueError("XVectorObjective: the aam loss needs cosine logits in [-1, 1] (a model built with "
                             "classifier='cosine', which spkver.train sets for loss aam)")
        margin = self.margin_at(step)
        if self._aam is None or self._aam[0] != margin:
            from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

            self._aam = (margin, LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=self.scale)))
        return self._aam[1](logits.unsqueeze(1), labels.unsqueeze(1)), margin

    def __call__(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, step: int) -> tuple:
        if logits.dim() != 2:
            raise ValueError(f"XVectorObjective: logits must be (batch, classes), got {tuple(logits.shape)}")
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"XVectorObjective: labels shape {tuple(labels.shape)} != (batch,) = "
                             f"({logits.shape[0]},)")
        bad = ((labels < 0) | (labels >= logits.shape[1])).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"XVectorObjective: label {int(labels[i])} of example {i} is outside "
                             f"[0, {logits.shape[1]})")
        ce, margin = self.classification_loss(logits.float(), labels, step)
        w = self.weight(step)
        kl_fn = getattr(model, "kl", None)
        if kl_fn is None:
            kl = torch.zeros((), device=logits.device)
        elif w > 0.0:
            kl = kl_fn()
        else:
            with torch.no_grad():
                kl = kl_fn()
        loss = ce + (w / self.n_train) * kl if w > 0.0 else ce
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean()
        stats = {"ce": float(ce.detach()), "kl": float(torch.as_tensor(kl).detach()), "kl_weight": w,
                 "acc": float(acc)}
        if margin is not None:
            stats["margin"] = margin
        return loss, stats
