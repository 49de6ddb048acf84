"""A before/after check: 50 fixed configurations give exactly the JSON recorded in tests/golden/.

The golden file was generated before the speed work (caches, fast path) touched anything, so any
difference is a behaviour change. After an intended change to the arithmetic, regenerate it with
VRAMCALC_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from golden_configs import configs
from vramcalc.cli import render
from vramcalc.core.errors import VramcalcError
from vramcalc.core.fit import fit
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

GOLDEN = Path(__file__).parent / "golden" / "estimate_50.json"


def _documents() -> list[dict[str, Any]]:
    gpu = presets.find_gpu("rtx4090")
    docs: list[dict[str, Any]] = []
    for model, kw in configs():
        training = TrainingSpec(**kw)
        try:
            b = estimate(presets.find_model(model), training)
        except VramcalcError as e:
            docs.append({"model": model, "error": str(e)})
            continue
        docs.append(render.to_json(b, training, fit(b, gpu)))
    return docs


def test_fifty_configurations_match_the_golden_file() -> None:
    docs = json.loads(json.dumps(_documents()))
    if os.environ.get("VRAMCALC_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(docs, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert len(expected) == 50
    for i, (got, want) in enumerate(zip(docs, expected, strict=True)):
        assert got == want, f"configuration {i} ({configs()[i]}) changed"
