"""ONNX export of the embedding extractor (x-vector or ECAPA-TDNN), and an onnxruntime embedder with the call
contract of :class:`spkver.extract.Embedder`.

The exported graph is the inference form that extraction uses (:meth:`XVector.fuse_for_inference`: BatchNorm
folded into the affine layers, posterior means of Bayesian layers), from padded features to embeddings::

    feats    (batch, frames, feat_dim) float32   features as spkver.features.compute_features gives them
    lengths  (batch,) int64                      valid leading frames per example, in [15, frames]
    ->  embedding (batch, embed_dim) float32

with ``batch`` and ``frames`` dynamic. An ECAPA-TDNN (or another SpeechBrain network on features,
:class:`spkver.nn.ecapa.SpeechBrainEmbedding`; eval mode, posterior means) is exported with the same inputs and
output but a batch of one: its convolutions pad by reflection and its squeeze-excitation and pooling see the
whole sequence, so padding would change a shorter example's embedding; torch extraction runs each length apart
for the same reason (``embed_inference``), and :class:`OnnxEmbedder` runs one window per call. The feature front end (MFCC / fbank, sliding CMN, energy VAD) is not
part of the graph: it stays in Python (:func:`spkver.features.compute_features`). Its VAD keeps a
data-dependent subset of frames, which a static graph cannot express exactly.

``onnx``, ``onnxruntime`` and ``onnxscript`` (the ``onnx`` extra) are imported only when these functions run;
the export uses torch's torch.export-based ONNX exporter (torch >= 2.6).
"""

from __future__ import annotations

import copy
import importlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from scoring.io import atomic_write
from spkver import __version__
from spkver.extract import MIN_FRAMES, merge_windows, window_batch
from spkver.nn.ecapa import SpeechBrainEmbedding
from spkver.nn.tdnn import CONTEXT, FusedXVector, XVector

__all__ = ["export_onnx", "OnnxEmbedder", "INPUT_NAMES", "OUTPUT_NAME", "MIN_OPSET"]

INPUT_NAMES = ("feats", "lengths")
OUTPUT_NAME = "embedding"
MIN_OPSET = 18  # the torch.export-based exporter has no translations for older opsets


class _EmbeddingGraph(nn.Module):
    """What is exported: ``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> ``(batch, embed_dim)``.

    Unlike :meth:`FusedXVector.forward` it neither validates ``lengths`` nor trims padding (both depend on
    the values, which a graph with dynamic shapes must not), and it always masks by ``lengths``: a full
    example masks nothing.
    """

    def __init__(self, fused: FusedXVector):
        super().__init__()
        self.fused = fused

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fused.embed_prepared(feats.transpose(1, 2), lengths - CONTEXT)


class _SpeechBrainGraph(nn.Module):
    """What is exported of a SpeechBrain network: ``feats (1, frames, feat_dim)``, ``lengths (1,)`` ->
    ``(1, embed_dim)``, the eval-mode :meth:`SpeechBrainEmbedding.embed_relative` with the relative length
    ``lengths / frames`` (1 for the single, unpadded example :class:`OnnxEmbedder` passes)."""

    def __init__(self, model: SpeechBrainEmbedding):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.embed_relative(feats, lengths.to(feats.dtype) / feats.shape[1])


def export_onnx(model: nn.Module, path: str | os.PathLike, feat_dim: int, opset: int | None = None) -> Path:
    """Write the embedding extractor of ``model`` to the ONNX file ``path`` (atomically) and return the path.

    Args:
        model: an :class:`~spkver.nn.tdnn.XVector` / ``BayesXVector`` (exported as
            ``model.fuse_for_inference()``, the form :class:`spkver.extract.Embedder` runs: posterior-mean
            embeddings), a :class:`~spkver.nn.tdnn.FusedXVector`, or an ECAPA-TDNN (any
            :class:`~spkver.nn.ecapa.SpeechBrainEmbedding` on features, Bayesian ones with their posterior means;
            batch axis of one, see the module docstring). The model itself is not changed.
        path: output file, usually ``*.onnx``.
        feat_dim: feature dimension (must match the model's); the graph's only static input axis (with an
            ECAPA-TDNN's batch).
        opset: ONNX opset version (>= 18, the oldest the exporter writes); None takes the exporter's default.

    Inputs ``feats (batch, frames, feat_dim)`` float32 and ``lengths (batch,)`` int64, output
    ``embedding (batch, embed_dim)`` float32 (see the module docstring); every ``lengths`` must lie in
    ``[min_frames, frames]``, which :class:`OnnxEmbedder` ensures (shorter utterances repeated, as in
    extraction). The feature front end is not exported: compute features with
    :func:`spkver.features.compute_features`. The model's ``feat_dim``, ``embed_dim``, ``min_frames`` and the
    package version go into the file's metadata.
    """
    onnx = _require("onnx")
    _require("onnxscript")  # the exporter translates through it

    min_frames = MIN_FRAMES
    if isinstance(model, (FusedXVector, XVector)):
        fused = copy.deepcopy(model) if isinstance(model, FusedXVector) else model.fuse_for_inference()
        graph = _EmbeddingGraph(fused)
        model_dim, embed_dim = fused.feat_dim, int(fused.seg_w.shape[0])
        # two examples of different lengths: torch.export specialises axes whose example size is 0 or 1
        batch = torch.export.Dim("batch")
        examples = (torch.zeros(2, 2 * MIN_FRAMES, model_dim), torch.tensor([2 * MIN_FRAMES, MIN_FRAMES]))
    elif isinstance(model, SpeechBrainEmbedding) and model.frontend is None:
        graph = _SpeechBrainGraph(copy.deepcopy(model))
        model_dim, embed_dim = model.feat_dim, model.embed_dim
        min_frames = max(MIN_FRAMES, int(getattr(model, "min_frames", MIN_FRAMES)))
        batch = None  # one example per call: the batch axis is specialised to 1
        examples = (torch.zeros(1, 2 * min_frames, model_dim), torch.tensor([2 * min_frames]))
    else:  # e.g. a SpeechBrain network with its waveform front end: not exported
        raise TypeError(f"export_onnx: expected an XVector, BayesXVector, FusedXVector or an ECAPA-TDNN on "
                        f"features, got {type(model).__name__} (other models run with the torch runtime)")
    if isinstance(feat_dim, bool) or int(feat_dim) != feat_dim or feat_dim != model_dim:
        raise ValueError(f"export_onnx: feat_dim {feat_dim!r} does not match the model's {model_dim}")
    if opset is not None and (isinstance(opset, bool) or int(opset) != opset or opset < MIN_OPSET):
        raise ValueError(f"export_onnx: opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    graph = graph.to("cpu", torch.float32).eval()
    frames = torch.export.Dim("frames", min=min_frames)
    shapes = ({"feats": {0: batch, 1: frames}, "lengths": {0: batch}} if batch is not None
              else {"feats": {1: frames}, "lengths": None})
    # The torch.export-based exporter (dynamo=True, torch's default since 2.9) records batch and frames as
    # symbols and stops with an error on any data-dependent Python branch; the TorchScript exporter
    # (dynamo=False, deprecated) would bake such a branch into the trace with only a TracerWarning. Both
    # round-trip this graph; the torch.export one needs onnxscript.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used", category=UserWarning)
        program = torch.onnx.export(graph, examples, None, input_names=list(INPUT_NAMES),
                                    output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                    dynamic_shapes=shapes, external_data=False, verbose=False)
    proto = program.model_proto
    meta = {"spkver_version": __version__, "feat_dim": str(model_dim), "embed_dim": str(embed_dim),
            "min_frames": str(min_frames)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path = Path(path)
    with atomic_write(path) as tmp:
        onnx.save_model(proto, tmp)
    return path


def _require(name: str):
    """Import ``name``, or say which extra provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{name} is needed for ONNX export and inference: pip install 'spkver[onnx]' "
                          f"({err})") from None


def _describe(args) -> str:
    return ", ".join(f"{a.name} {a.shape} {a.type}" for a in args)


class OnnxEmbedder:
    """Embeds batches of variable-length features with an ONNX file of :func:`export_onnx`, on onnxruntime's
    CPU provider.

    ``__call__(feats: list[(frames_i, feat_dim)]) -> (embeddings (n, embed_dim) float32, None)``: the contract
    of :class:`spkver.extract.Embedder` (posterior mean, so no spread), with the same windows: an utterance
    longer than ``max_frames`` is cut into the fewest near-equal windows and its embedding is their
    frame-weighted mean; one shorter than the model's minimum (the file's ``min_frames``, 15 for an x-vector) is
    repeated up to it. An ECAPA-TDNN's file (batch axis of one) runs one window per call.

    Args:
        path: the ``.onnx`` file.
        num_threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).
        max_frames: window length in frames, as ``Embedder(max_frames=...)``.

    Attributes ``path``, ``feat_dim``, ``embed_dim``, ``metadata`` (the file's metadata) and ``session``
    (the ``onnxruntime.InferenceSession``).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, max_frames: int = 6000):
        ort = _require("onnxruntime")
        self.path = Path(path)
        if num_threads is not None and (isinstance(num_threads, bool) or int(num_threads) != num_threads
                                        or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        if isinstance(max_frames, bool) or int(max_frames) != max_frames or max_frames < MIN_FRAMES:
            raise ValueError(f"max_frames must be an integer >= {MIN_FRAMES}, got {max_frames!r}")
        self.max_frames = int(max_frames)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX model: {self.path}")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's InvalidProtobuf, InvalidGraph, Fail, ... share no base class
            raise ValueError(f"{self.path}: not a loadable ONNX model ({str(err).strip()})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        ok = ([a.name for a in inputs] == list(INPUT_NAMES) and [a.name for a in outputs] == [OUTPUT_NAME]
              and inputs[0].type == "tensor(float)" and len(inputs[0].shape) == 3
              and isinstance(inputs[0].shape[2], int) and inputs[1].type == "tensor(int64)"
              and len(inputs[1].shape) == 1 and len(outputs[0].shape) == 2 and isinstance(outputs[0].shape[1], int))
        if not ok:
            raise ValueError(f"{self.path}: not an embedding extractor of export_onnx: it takes "
                             f"[{_describe(inputs)}] and gives [{_describe(outputs)}]; expected feats "
                             "(batch, frames, feat_dim) float32, lengths (batch,) int64 -> embedding "
                             "(batch, embed_dim) float32")
        self.feat_dim = int(inputs[0].shape[2])
        self.embed_dim = int(outputs[0].shape[1])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.min_frames = int(self.metadata.get("min_frames", MIN_FRAMES))
        self.one_per_call = inputs[0].shape[0] == 1  # an ECAPA-TDNN's graph: one unpadded window per call

    def __call__(self, feats: list[np.ndarray]) -> tuple:
        if len(feats) == 0:
            raise ValueError(f"{self.path}: no utterances to embed")
        for i, f in enumerate(feats):
            if np.ndim(f) != 2 or np.shape(f)[1] != self.feat_dim or len(f) == 0:
                raise ValueError(f"{self.path}: expects features (frames, {self.feat_dim}) per utterance; "
                                 f"utterance {i} has shape {np.shape(f)}")
        x, lengths, owner = window_batch(feats, self.max_frames, self.min_frames)
        if self.one_per_call:
            emb = np.concatenate([self.session.run([OUTPUT_NAME], {INPUT_NAMES[0]: x[j:j + 1, :n],
                                                                   INPUT_NAMES[1]: lengths[j:j + 1]})[0]
                                  for j, n in enumerate(lengths)])
        else:
            emb = self.session.run([OUTPUT_NAME], {INPUT_NAMES[0]: x, INPUT_NAMES[1]: lengths})[0]
        return merge_windows(emb, lengths, owner, len(feats)), None

    def __repr__(self) -> str:
        return f"OnnxEmbedder({str(self.path)!r}, feat_dim={self.feat_dim}, embed_dim={self.embed_dim})"
