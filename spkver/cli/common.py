"""Shared pieces of the command line: file-format help, the user-error type, argument validators."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

log = logging.getLogger("spkver")

FORMATS = """file formats:
  trials      Kaldi/NIST "enroll test target|nontarget", VoxCeleb "1|0 enroll test", or unlabelled "enroll test"
  embeddings  .npz with arrays "ids" (n,) and "embeddings" (n, dim), or Kaldi .scp/.ark (kaldiio)
  scores      one trial per line: "enroll test score"
  utt2spk     Kaldi "utt spk" lines; enroll map: Kaldi spk2utt-style "model utt1 utt2 ..." lines
"""


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {path}")
    return p


def model_source(text: str):
    """A checkpoint file or experiment dir that exists, or ``speechbrain:DIR`` with an existing DIR."""
    if text.startswith("speechbrain:"):
        if not Path(text[len("speechbrain:"):]).expanduser().is_dir():
            raise argparse.ArgumentTypeError(f"no such SpeechBrain model folder: {text[len('speechbrain:'):]}")
        return text
    return existing(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def check_device(device: str | None, amp: str | None = None) -> None:
    """A ``CliError`` naming ``--device`` / ``--amp`` when CUDA is asked for but absent, or fp16 without it."""
    from spkver.distributed import resolve_device

    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise CliError(f"--device {device}: {err}") from None
    if amp == "fp16" and resolved.type != "cuda":
        raise CliError(f"--amp fp16 needs a CUDA device (the device is {resolved}); use --amp bf16 or none")


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value
