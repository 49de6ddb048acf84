"""Golden outputs: one table per format, and one of each command, byte for byte.

A change of layout or wording shows up as a diff of these files. After an intended change, regenerate with
VRAMCALC_REGEN_GOLDEN=1 and review the diff (issue 11: output identical before and after the move except
where a bug was fixed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_helpers import invoke

GOLDEN = Path(__file__).parent / "golden" / "outputs"
RUN = ["mistral-7b", "--method", "qlora", "--gpu", "rtx4090"]
CASES = {
    **{f"estimate.{fmt}": ["estimate", *RUN, "--format", fmt] for fmt in ("table", "json", "yaml", "csv", "markdown")},
    "compare.table": ["compare", "mistral-7b", "--method", "lora,qlora", "--gpu", "rtx4090,a100-80gb"],
    "fit.table": ["fit", *RUN],
    "gpus-fits.table": ["gpus", "--fits", "mistral-7b", "--method", "qlora"],
    "show.table": ["show", "mistral-7b"],
    "explain.text": ["explain", *RUN, "--only", "weights"],
    # a PEFT method of core/peft_methods.py and a preference objective, every section (issues 18 and 14)
    "explain.ia3.text": ["explain", "mistral-7b", "--method", "ia3"],
    "explain.dpo.text": ["explain", "mistral-7b", "--method", "lora", "--objective", "dpo", "--prompt-len", "128"],
    "storage.table": ["storage", "mistral-7b"],
}


@pytest.fixture(autouse=True)
def _fixed_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("VRAMCALC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "golden-cache"))
    for name in ("NO_COLOR", "FORCE_COLOR", "VRAMCALC_PRESETS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", list(CASES))
def test_output_matches_golden(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(CASES[name], capsys)
    assert code == 0 and err == "", err
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("VRAMCALC_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out, encoding="utf-8")
    assert out == path.read_text(encoding="utf-8")
