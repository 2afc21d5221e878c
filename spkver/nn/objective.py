"""Training objective of the (Bayesian) x-vector: the minibatch form of the negative ELBO
(Blundell et al. 2015, eq. 8, with the KL spread evenly over an epoch):

    loss = mean_batch CE(logits, labels) + w(step) * KL(q || p) / n_train

``n_train`` is the number of training examples per epoch: each of the ``n_train / batch`` steps of
an epoch carries ``batch / n_train`` of the KL, so one epoch sums to the full negative ELBO (divided
by ``n_train``). Dividing by the batch size instead would over-weight the KL ``n_train / batch`` times.
``w(step)`` rises linearly from 0 to ``kl_weight`` over ``kl_warmup_steps`` ("KL annealing",
Bowman et al. 2016; Sonderby et al. 2016).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["XVectorObjective"]


class XVectorObjective:
    """``__call__(model, logits (batch, classes), labels (batch,), step) -> (loss, stats)``.

    ``stats`` holds floats: ``ce`` (mean cross-entropy), ``kl`` (the model's summed KL, 0 for a
    baseline), ``kl_weight`` (``w(step)``) and ``acc`` (top-1 accuracy of the batch).
    """

    def __init__(self, n_train: int, kl_weight: float = 1.0, kl_warmup_steps: int = 0):
        if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1:
            raise ValueError(f"XVectorObjective: n_train must be a positive integer, got {n_train!r}")
        if not kl_weight >= 0.0:
            raise ValueError(f"XVectorObjective: kl_weight must be >= 0, got {kl_weight!r}")
        if int(kl_warmup_steps) != kl_warmup_steps or kl_warmup_steps < 0:
            raise ValueError(f"XVectorObjective: kl_warmup_steps must be an integer >= 0, got {kl_warmup_steps!r}")
        self.n_train = int(n_train)
        self.kl_weight = float(kl_weight)
        self.kl_warmup_steps = int(kl_warmup_steps)

    def weight(self, step: int) -> float:
        """``w(step) = kl_weight * min(1, step / kl_warmup_steps)`` (``kl_weight`` without warm-up)."""
        if step < 0:
            raise ValueError(f"XVectorObjective: step must be >= 0, got {step}")
        if self.kl_warmup_steps == 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, step / self.kl_warmup_steps)

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
        ce = F.cross_entropy(logits.float(), labels)
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
        return loss, stats
