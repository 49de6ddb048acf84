"""Every JSON output validates against its schema in schemas/ (so the documented keys stay stable)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

CASES = {
    "estimate-plain": ("estimate", ["estimate", "mistral-7b"]),
    "estimate-gpu": ("estimate", ["estimate", "mistral-7b", "--method", "qlora", "--gpu", "rtx4090"]),
    "estimate-budget": ("estimate", ["estimate", "gpt2", "--max-memory", "1GB"]),
    "estimate-runs": ("estimate", ["estimate", "--config", str(ROOT / "examples/runs/planned.yaml")]),
    "estimate-axolotl": (
        "estimate",
        ["estimate", "--config", str(ROOT / "examples/configs/axolotl-qlora.yaml")],
    ),
    "compare": (
        "compare",
        ["compare", "gpt2", "--method", "full,lora", "--gpu", "t4,rtx4090", "--seq-len", "512,1024"],
    ),
    "compare-nogpu": ("compare", ["compare", "gpt2,pythia-70m", "--batch-size", "1,2"]),
    "fit": ("fit", ["fit", "mistral-7b", "--gpu", "rtx4090", "--method", "qlora"]),
    "fit-suggestions": ("fit", ["fit", "mistral-7b", "--gpu", "rtx4090", "--batch-size", "4"]),
    "gpus-fits": ("gpus-fits", ["gpus", "--fits", "gpt2"]),
    "gpus": ("gpus", ["gpus"]),
    "models": ("models", ["models"]),
    "show": ("show", ["show", "gpt2"]),
}


def test_every_schema_is_valid_and_used() -> None:
    files = sorted(p.name.removesuffix(".schema.json") for p in (ROOT / "schemas").glob("*.schema.json"))
    for name in files:
        jsonschema.Draft202012Validator.check_schema(
            json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
        )
    assert set(files) == {schema for schema, _ in CASES.values()}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_output_matches_schema(case: str) -> None:
    schema_name, args = CASES[case]
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    schema = json.loads((ROOT / "schemas" / f"{schema_name}.schema.json").read_text())
    jsonschema.validate(json.loads(result.stdout), schema, cls=jsonschema.Draft202012Validator)
