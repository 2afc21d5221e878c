"""Write a training configuration for one run: a recipe's YAML file plus ``section.key=value`` overrides.

The recipes keep every training setting in ``conf/*.yaml``; what differs between runs of one recipe (the seed,
the shared feature cache, MUSAN/RIR folders found on this machine) is set here, at run time. The result is
written atomically with a header naming its base and overrides; ``spkver train`` then checks it like any
configuration (unknown keys and bad values are rejected, naming the file, section and key).

usage: python make_conf.py BASE.yaml OUT.yaml [KEY=VALUE ...]

KEY is a dotted path (``seed``, ``data.cache_dir``, ``data.augment.musan``, ``model.channels``); VALUE is read
as YAML (``3``, ``0.5``, ``true``, ``null``, ``[1, 2]``, a string): ``spkver.config.apply_overrides``, the
same rules as ``spkver train --set``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from spkver.config import apply_overrides


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    base, out = Path(argv[0]), Path(argv[1])
    try:
        if not base.is_file():
            raise FileNotFoundError(f"no such configuration file: {base}")
        config = yaml.safe_load(base.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{base}: expected a mapping at the top level")
        config = apply_overrides(config, argv[2:])
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"make_conf.py: error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"# {base} with overrides: {' '.join(argv[2:]) or 'none'}\n"
                       + yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
