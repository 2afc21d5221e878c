"""Speaker classifiers on top of an embedding network: embedding ``(batch, dim)`` -> logits ``(batch, classes)``.

* ``"linear"``: ``nn.Linear(dim, classes)``, for the cross-entropy loss;
* ``"cosine"``: :class:`CosineClassifier`, the cosine between the length-normalised input and each
  length-normalised class weight, in [-1, 1]; the additive angular margin loss (AAM-softmax, Deng et al. 2019,
  ``loss: {name: aam}``) puts its margin and scale on these. Same parameter (``weight``, ``(classes, dim)``) and
  arithmetic as SpeechBrain's ``ECAPA_TDNN.Classifier`` without hidden blocks.

The training configuration's loss picks the kind (``spkver.train``), so a model's ``classifier`` argument is
never written by hand.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CosineClassifier", "CLASSIFIERS", "make_classifier"]


class CosineClassifier(nn.Module):
    """``forward(x (batch, in_features)) -> (batch, num_classes)`` cosines, ``cos(x, weight_k)``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"


CLASSIFIERS = ("linear", "cosine")


def make_classifier(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """The classifier of ``kind`` (one of :data:`CLASSIFIERS`)."""
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineClassifier(in_features, num_classes)
    raise ValueError(f"unknown classifier {kind!r}; valid: {list(CLASSIFIERS)}")
