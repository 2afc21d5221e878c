"""What every speaker-embedding model of the registry (:data:`spkver.nn.tdnn.MODELS`) offers, Bayesian or not.

:class:`SpeakerModel` gives the generic half of the model interface on top of a subclass's ``embed`` and
``classifier``: ``forward`` (logits), ``kl``, ``is_bayesian``, ``init_from_baseline`` (a deterministic or
pretrained network's weights into the means of a bayesianized one:
:func:`~spkver.nn.bayesianize.init_from_deterministic`), ``extract`` (posterior mean, or Monte Carlo mean and
spread) and ``fuse_for_inference`` (here: the eval-mode network with posterior means; models whose layout
allows it, like the x-vector, fold BatchNorm into the following layers instead).

Inputs are ``x (batch, frames, feat_dim)`` with optional ``lengths (batch,)`` counting valid leading frames.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from spkver.nn.bayes import BayesianLayer, sampling, total_kl
from spkver.nn.bayesianize import init_from_deterministic

__all__ = ["SpeakerModel", "InferenceEmbedding", "check_mc_samples"]


def check_mc_samples(mc_samples) -> int:
    if isinstance(mc_samples, bool) or int(mc_samples) != mc_samples or mc_samples < 0:
        raise ValueError(f"extract: mc_samples must be an integer >= 0, got {mc_samples!r}")
    return int(mc_samples)


class SpeakerModel(nn.Module):
    """Base of the registry's models. Subclasses set ``feat_dim``, ``num_classes``, ``embed_dim``, a
    ``classifier`` module (embedding -> logits) and implement :meth:`embed`.

    ``min_frames``: the fewest input frames an example may have (extraction repeats shorter utterances up to it).
    """

    min_frames = 15
    #: state-dict key prefixes of the layers between the embedding and the training speakers' logits (training
    #: alone uses them); an embedding-only extractor leaves them out (:meth:`load_embedding_state`)
    head_prefixes: tuple = ("classifier.",)
    #: False once :meth:`load_embedding_state` loaded weights without the head: :meth:`forward` refuses to run
    has_head = True

    def embed(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """Embedding ``(batch, embed_dim)`` of features ``(batch, frames, feat_dim)`` in the current mode."""
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Embedding ``(batch, embed_dim)`` -> logits ``(batch, num_classes)``."""
        return self.classifier(embedding)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` (cosines with ``classifier="cosine"``)."""
        if not self.has_head:
            raise RuntimeError(f"{type(self).__name__}: this extractor was saved for embedding only, without the "
                               "classifier of its training speakers; use embed() or extract()")
        return self.head(self.embed(x, lengths))

    def embedding_state(self) -> dict:
        """The ``state_dict`` without the keys under :attr:`head_prefixes`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.head_prefixes)}

    def load_embedding_state(self, state: dict) -> None:
        """Load weights saved without the head (:meth:`embedding_state`): every other key must be there with
        its shape; the head keeps its initial values and :meth:`forward` refuses to run."""
        own = self.state_dict()
        expected = {k for k in own if not k.startswith(self.head_prefixes)}
        unexpected, missing = sorted(set(state) - expected), sorted(expected - set(state))
        if unexpected or missing:
            raise RuntimeError("; ".join(part for part in (
                f"unexpected key(s) {unexpected[:5]}" if unexpected else "",
                f"missing key(s) {missing[:5]}" if missing else "") if part))
        self.load_state_dict({**own, **state})
        self.has_head = False

    def embed_inference(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """:meth:`embed` for inference, where one example's embedding must not depend on the others in its
        batch (subclasses whose padding leaks into valid frames run lengths apart)."""
        return self.embed(x, lengths)

    @property
    def is_bayesian(self) -> bool:
        return any(isinstance(m, BayesianLayer) for m in self.modules())

    def kl(self) -> torch.Tensor:
        """Summed ``KL(q || p)`` of all Bayesian layers (scalar); 0 without any."""
        return total_kl(self)

    def init_from_baseline(self, state_dict: dict, init_sigma: float | None = None, keep: tuple = ()):
        """Load a baseline's (deterministic or pretrained) ``state_dict``: Bayesian layers take its weights as
        their means; ``rho`` keeps its initial value, or is set so ``sigma == init_sigma``; keys under the
        prefixes ``keep`` stay as they are (see :func:`spkver.nn.bayesianize.init_from_deterministic`)."""
        return init_from_deterministic(self, state_dict, init_sigma, keep)

    def extract(self, x: torch.Tensor, lengths=None, mc_samples: int = 0) -> tuple:
        """Embeddings for inference, in eval mode and without autograd.

        Returns ``(mean (batch, embed_dim), spread (batch, embed_dim) | None)``: the posterior-mean embedding
        and None (``mc_samples == 0`` or a deterministic model), or the mean of ``mc_samples`` sampled
        embeddings and their per-dimension standard deviation (divided by ``mc_samples``).
        """
        mc_samples = check_mc_samples(mc_samples)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.inference_mode():
                if mc_samples == 0 or not self.is_bayesian:
                    return self.embed_inference(x, lengths), None
                with sampling(self, True):
                    draws = torch.stack([self.embed_inference(x, lengths) for _ in range(mc_samples)])
                mean = draws.mean(0)
                return mean, (draws - mean).square_().mean(0).sqrt_()
        finally:
            for module, mode in modes:
                module.training = mode

    def fuse_for_inference(self) -> nn.Module:
        """The posterior-mean embedding path as a module ``(x, lengths=None) -> (batch, embed_dim)``."""
        return InferenceEmbedding(self)


class InferenceEmbedding(nn.Module):
    """``forward(x, lengths=None) -> (batch, embed_dim)``: ``model.extract(x, lengths)[0]`` (eval mode,
    posterior means, no autograd), following the model's current weights."""

    def __init__(self, model: SpeakerModel):
        super().__init__()
        self._model = (model,)  # a tuple: not registered as a submodule, so no second copy of the weights
        self.feat_dim, self.embed_dim = model.feat_dim, model.embed_dim

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return self._model[0].extract(x, lengths)[0]
