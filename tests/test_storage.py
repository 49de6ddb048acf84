"""N fine-tuned copies vs one base + N adapters (shared/seeds/001's deployment argument)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.specs import TrainingSpec
from vramcalc.core.storage import break_even_adapters, compare_storage
from vramcalc.io import presets

runner = CliRunner()
MISTRAL_BF16_BYTES = 14_483_464_192  # 7,241,732,096 params × 2 bytes (seed 001: "14 gigabytes")
# LoRA r=16 on q_proj, v_proj: 32 layers × 16 × ((4096 + 4096) + (4096 + 1024)) = 6,815,744 parameters.
MISTRAL_LORA_PARAMS = 6_815_744


def test_ten_copies_vs_base_plus_ten_adapters() -> None:
    c = compare_storage(presets.find_model("mistral-7b"), TrainingSpec(mode="inference", method="lora"), 10)
    assert c.model_bytes == MISTRAL_BF16_BYTES
    assert c.adapter_parameters == MISTRAL_LORA_PARAMS
    assert c.adapter_bytes == 4 * MISTRAL_LORA_PARAMS  # fp32 adapters: 27,262,976 bytes
    assert c.full_copies_bytes == 10 * MISTRAL_BF16_BYTES
    assert c.base_plus_adapters_bytes == MISTRAL_BF16_BYTES + 10 * 4 * MISTRAL_LORA_PARAMS
    # ceil(14,483,464,192 / 27,262,976) = 532 adapters weigh one copy.
    assert break_even_adapters(c) == 532


def test_one_task_costs_an_adapter_more() -> None:
    c = compare_storage(presets.find_model("mistral-7b"), TrainingSpec(mode="inference", method="lora"), 1)
    assert c.saved_bytes == -4 * MISTRAL_LORA_PARAMS


def test_cli_storage_json_and_errors() -> None:
    result = runner.invoke(app, ["storage", "mistral-7b", "--adapters", "10", "--adapter-dtype", "bf16",
                                 "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["full_copies_bytes"] == 10 * MISTRAL_BF16_BYTES
    assert doc["base_plus_adapters_bytes"] == MISTRAL_BF16_BYTES + 10 * 2 * MISTRAL_LORA_PARAMS
    bad = runner.invoke(app, ["storage", "mistral-7b", "--adapters", "0"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "error: --adapters must be at least 1, not 0"
    unknown = runner.invoke(app, ["storage", "no-such-model"])
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output
