"""--ac-offload: transformers' offloaded checkpointing (activation_checkpointing_kwargs offload: true), save_on_cpu
around each checkpoint (memory/savers.py _save_on_cpu_residency, trace/_save_on_cpu.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.memory import estimate
from vramcalc.core.memory.savers import layer_residency
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets


def test_residency_keeps_the_unwrapped_layers_and_one_input_back() -> None:
    # 5 layers, every_n_layers 2 from layer 0: layers 0, 2, 4 under save_on_cpu (3), layers 1 and 3 keep their
    # saved sets (2 x 100) on the GPU; in backward one input (10) comes back for the recompute; the host holds 3 x 10
    r = layer_residency(n_layers=5, saving_layers=5, checkpointing=True, every=2, offload=False, per_layer=100,
                        layer_input=10, from_first=True, save_on_cpu=True)
    assert (r.forward, r.backward, r.host) == (200, 210, 30)
    # while the layers run: the running layer's input and the embedding's output (one of them when LoRA's leaf is
    # counted already)
    assert r.running == 20
    assert layer_residency(n_layers=5, saving_layers=5, checkpointing=True, every=2, offload=False, per_layer=100,
                           layer_input=10, from_first=True, save_on_cpu=True, leaf_kept=True).running == 10
    # every layer checkpointed: nothing kept between forward and backward
    r = layer_residency(n_layers=5, saving_layers=5, checkpointing=True, every=1, offload=False, per_layer=100,
                        layer_input=10, save_on_cpu=True)
    assert (r.forward, r.backward, r.host) == (0, 10, 50)


def test_host_ram_is_the_checkpointed_inputs() -> None:
    # tinyllama-1.1b (22 layers, hidden 2048), LoRA bf16, b2 s512: each layer's input is 2 x 512 x 2048 x 2 B =
    # 4,194,304 B in host RAM; every 2nd layer from layer 0: 11 of 22 layers checkpointed
    m = presets.find_model("tinyllama-1.1b")
    base = {"method": "lora", "precision": "bf16", "grad_checkpointing": True, "batch_size": 2, "seq_len": 512}
    off = estimate(m, TrainingSpec(**base, ac_offload=True))  # type: ignore[arg-type]
    gc = estimate(m, TrainingSpec(**base))  # type: ignore[arg-type]
    assert off.cpu_offload_bytes == 22 * 4_194_304 and gc.cpu_offload_bytes == 0
    assert off.tensor_peak_bytes < gc.tensor_peak_bytes
    half = estimate(m, TrainingSpec(**base, ac_offload=True, ac_every=2, ac_layout="hf"))  # type: ignore[arg-type]
    assert half.cpu_offload_bytes == 11 * 4_194_304
    assert any("save_on_cpu" in n for n in off.notes)


def test_traced_case() -> None:
    # --grid gc-offload "cut:tinyllama-1.1b:3 | lora all-linear | ac-offload every 1 | b2 s1024 cut": traced
    # 934,664,192 B (benchmarks/results/accuracy_gc-offload.json), the estimate 937,209,856 B (+0.27 %); the trace's
    # pinned host peak (trace/_save_on_cpu.py note) is the 3 layers' inputs, 3 x 2 x 1024 x 2048 x 2 B
    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=3)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=1024,
                     loss="cut", grad_checkpointing=True, ac_offload=True)
    b = estimate(m, t)
    assert b.tensor_peak_bytes == 937_209_856 and b.cpu_offload_bytes == 3 * 8_388_608
    # full fine-tuning: the embedding's output is not kept beside the bottom layer's rerun (only its copy back):
    # traced 2,142,929,920 B, the estimate 2,143,150,080 B (+0.01 %)
    full = replace(t, method="full", precision="pure-bf16", lora_targets=("q_proj", "v_proj"))
    assert estimate(m, full).tensor_peak_bytes == 2_143_150_080


@pytest.mark.parametrize(("args", "words"), [
    (["--ac-offload"], "add --grad-checkpointing"),
    (["--ac-offload", "--grad-checkpointing", "--ac-every", "2"], "add --ac-layout hf"),
    (["--ac-offload", "--grad-checkpointing", "--activation-offload"], "drop one of them"),
    (["--ac-offload", "--grad-checkpointing", "--zero", "3", "--gpus", "2"], "--zero / --fsdp"),
])
def test_refused(capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err


def test_refused_off_dense_decoders(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "qwen3-30b-a3b", "--method", "lora", "--grad-checkpointing", "--ac-offload"],
                          capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "dense decoders" in err


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--grad-checkpointing", "--ac-offload",
                           "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["settings"]["ac_offload"] is True


def test_save_on_cpu_emulation_keeps_sizes_on_the_host_and_copies_back() -> None:
    # trace/_save_on_cpu.py on plain CPU tensors: x * w saves both operands (torch MulBackward0), 4 x 8 fp32 = 128 B
    # each, packed to "host RAM"; each unpack is a new tensor (save_on_cpu's `.to(device)` of the host copy), and
    # the host bytes go when autograd drops the saved tensors after backward
    torch = pytest.importorskip("torch")
    from vramcalc.trace._save_on_cpu import HOST, SaveOnCpuEmulation

    HOST.update(now=0, peak=0)
    x = torch.ones(4, 8, requires_grad=True)
    w = torch.ones(4, 8, requires_grad=True)
    with SaveOnCpuEmulation(pin_memory=True, device_type="cuda"):
        y = x * w
    assert HOST == {"now": 256, "peak": 256}
    unpacked = y.grad_fn._saved_self  # type: ignore[union-attr]
    assert unpacked.shape == x.shape and unpacked.data_ptr() != x.data_ptr()
    y.sum().backward()
    del y, unpacked
    assert HOST["now"] == 0 and x.grad is not None and x.grad.shape == x.shape
