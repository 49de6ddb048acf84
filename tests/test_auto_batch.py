"""HF Trainer auto_find_batch_size (issue 13): accelerate's x0.9 retries on the budget `fit` uses
(core/searches.py auto_batch_size), the note and JSON of `estimate`, and the run-file key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.errors import SpecError
from vramcalc.core.searches import Estimator, auto_batch_size
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
RUN = TrainingSpec(method="lora", batch_size=16, seq_len=1024, grad_accum=4, auto_find_batch_size=True)


def test_retries_follow_accelerates_sequence() -> None:
    # accelerate utils/memory.py find_executable_batch_size: batch_size = int(batch_size * 0.9) after each OOM, so from
    # 16 the Trainer tries 16, 14, 12, 10, 9, 8, ... (never 15, 13 or 11)
    est = Estimator(presets.find_model("mistral-7b"))

    def peak(b: int) -> int:
        return est.peak(replace(RUN, batch_size=b))

    assert auto_batch_size(est, RUN, peak(16)) == 16  # it fits as configured
    assert auto_batch_size(est, RUN, peak(10)) == 10
    # a budget where 11 fits but 12 does not: the Trainer jumps from 12 to 10 (max_batch_size would say 11)
    assert peak(11) < peak(12)
    assert auto_batch_size(est, RUN, peak(11)) == 10
    assert auto_batch_size(est, RUN, peak(1) - 1) is None  # it reaches 0: "No executable batch size found"


def test_zero3_is_refused_as_transformers_does() -> None:
    with pytest.raises(SpecError, match="ZeRO-3"):
        replace(RUN, zero=3, gpus_per_node=2)
    with pytest.raises(SpecError, match="--mode inference"):
        TrainingSpec(mode="inference", auto_find_batch_size=True)


def test_estimate_reports_where_the_trainer_ends() -> None:
    runner = CliRunner()
    args = ["estimate", "mistral-7b", "--method", "lora", "--batch-size", "16", "--seq-len", "1024",
            "--grad-accum", "4", "--auto-find-batch-size", "--gpu", "a100-40gb"]
    doc = json.loads(runner.invoke(app, [*args, "--format", "json"], env=ENV).stdout)
    est = Estimator(presets.find_model("mistral-7b"))
    budget = presets.find_gpu("a100-40gb").memory_bytes  # the verdict's budget
    end = auto_batch_size(est, RUN, budget)
    assert end is not None and end < 16
    assert doc["auto_find_batch_size"] == {"start_batch_size": 16, "end_batch_size": end, "grad_accum": 4}
    # the estimate itself is the configured batch's
    assert doc["peak_bytes"] == est.peak(RUN)
    text = " ".join(runner.invoke(app, args, env=ENV).stdout.split())  # the note as one line
    assert f"it ends at batch {end}" in text and "gradient accumulation stays 4" in text
    no_gpu = runner.invoke(app, args[:-2], env=ENV)
    assert no_gpu.exit_code == 0 and "pass --gpu to see where it ends" in " ".join(no_gpu.stdout.split())


def test_run_file_key_is_mapped(tmp_path: Path) -> None:
    p = tmp_path / "args.json"
    p.write_text(json.dumps({"output_dir": "o", "per_device_train_batch_size": 8, "auto_find_batch_size": True}))
    run = runfiles.load(p)[0]
    assert run.options["auto_find_batch_size"] is True and "auto_find_batch_size" in run.mapped
    assert run.unmodelled == []
