"""The shared test corpus (../shared/corpus beside the repository), found once for all tests.

`DARKROOM_CORPUS` overrides the place; a missing corpus fails the run loudly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("DARKROOM_CORPUS"),
    Path(__file__).resolve().parents[2] / "shared" / "corpus",
    "/work/shared/corpus",
]
CORPUS = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "MANIFEST.json").is_file()),
              None)
if CORPUS is None:
    raise RuntimeError(f"test corpus not found in {_CANDIDATES[1:]}; set DARKROOM_CORPUS")
MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())["files"]
OK_FILES = [f for f in MANIFEST if f["expect"] == "ok"]
REJECT_FILES = [f for f in MANIFEST if f["expect"] == "reject"]
