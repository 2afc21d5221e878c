"""docs/DESIGN.md's layout tree names every module of the two packages and every recipe script."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layout_tree_lists_every_module():
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    tree = text[text.index("## Layout"):text.index("## Module contracts")]
    named = set(re.findall(r"[\w-]+\.(?:py|sh)", tree))
    missing = []
    for pkg in ("spkver", "scoring"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name != "__init__.py" and path.name not in named:
                missing.append(str(path.relative_to(ROOT)))
    for path in (ROOT / "recipes").rglob("*.sh"):
        if path.name not in named and path.name != "run.sh":
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"docs/DESIGN.md's layout tree does not name: {missing}"
