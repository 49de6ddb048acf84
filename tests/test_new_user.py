"""A scripted walk through what a new user ran into (issue 12), one test per item, in-process.

Each test runs the real command line (tests/cli_helpers.invoke: the console entry point, in-process) and
checks the fixed behaviour. Every number says where it comes from.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import invoke

# Mistral-7B seed numbers (issue 000; tests/test_params.py): they must not change.
MISTRAL_PARAMS = 7_241_732_096
MISTRAL_BF16_WEIGHTS = 2 * MISTRAL_PARAMS  # 14,483,464,192 B: 2 B per bf16 parameter


# --- item 1: explain handles inference (prefill/decode phases), never a traceback ---------------------

@pytest.mark.parametrize("extra", [
    [], ["--only", "weights"], ["--format", "json"], ["--tp", "2", "--gpus", "2"],
    ["--diff", "", "--mode inference"],
])
def test_explain_inference_never_tracebacks(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # The command of issue 12 (it raised KeyError 'forward' in explain's phase table).
    code, out, err = invoke(["explain", "llama-3.1-8b", "--mode", "inference", "--context", "8192",
                             "--batch-size", "4", *extra], capsys)
    assert code == 0, err
    assert "Traceback" not in err


def test_explain_inference_phases_are_prefill_and_decode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["explain", "llama-3.1-8b", "--mode", "inference", "--context", "8192",
                             "--batch-size", "4", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    keys = {s["key"]: s for s in doc["sections"]}
    assert "gradients" not in keys and "optimizer_state" not in keys  # no autograd when serving
    phases = [ln["key"] for ln in keys["phases"]["lines"]]
    assert phases == ["phases.prefill", "phases.decode"]  # memory/inference.py estimate_inference
    # KV cache: 32 layers × 2 (K, V) × 8 KV heads × 128 head_dim × 2 B (bf16) = 131,072 B per token
    # (Llama-3.1-8B config.json: num_hidden_layers 32, num_key_value_heads 8, head_dim 4096/32);
    # × batch 4 × context 8,192 tokens.
    assert keys["kv_cache"]["total"] == 131_072 * 4 * 8192
    assert not any("total only" in n for n in doc["notes"])  # the itemization adds up to the core's phases
