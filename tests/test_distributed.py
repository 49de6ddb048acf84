"""Multi-GPU memory: ZeRO / FSDP sharding, offload, tp/pp, and DeepSpeed's own estimator as the reference.

The two `ds_*` functions below are DeepSpeed's published estimators, re-typed from
deepspeedai/DeepSpeed deepspeed/runtime/zero/stage_1_and_2.py (estimate_zero2_model_states_mem_needs,
commit 02aa38c3a55174c87b33c4ad17a304389d037443) and deepspeed/runtime/zero/stage3.py
(estimate_zero3_model_states_mem_needs, commit 007cca6a2ffe3ed9d393459f4a3081bd54341ba6), because
DeepSpeed itself cannot be installed here. Our per-GPU model states must equal their GPU figure, and
our per-node host RAM × their additional_buffer_factor (1.5) their CPU figure where both count the same.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.memory import estimate
from vramcalc.core.memory.distributed import (
    activation_tokens,
    gpu_counts,
    largest_module_params,
    model_parallel_params,
)
from vramcalc.core.memory.overhead import nccl_buffer_bytes
from vramcalc.core.params import count_params
from vramcalc.core.searches import min_gpus
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

runner = CliRunner()

# 7,241,732,096 = sum(p.numel()) of Mistral-7B-v0.1 (shared/seeds/000; tests/test_presets_data.py).
# It is a multiple of 1024, so every partition below divides evenly, as DeepSpeed's floats assume.
MISTRAL_PARAMS = 7_241_732_096
# Largest single module of Mistral-7B: embed_tokens (and lm_head), 32,000 × 4,096 = 131,072,000 parameters.
MISTRAL_LARGEST = 131_072_000


def ds_zero2(total_params: int, num_gpus_per_node: int = 1, num_nodes: int = 1, cpu_offload: bool = True,
             additional_buffer_factor: float = 1.5) -> tuple[int, int]:
    """DeepSpeed stage_1_and_2.py estimate_zero2_model_states_mem_needs -> (cpu_mem, gpu_mem)."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def ds_zero3(total_params: int, largest_layer_params: int, num_gpus_per_node: int = 1, num_nodes: int = 1,
             cpu_offload: bool = True, cpu_offload_params: bool = True, zero_init: bool = True,
             additional_buffer_factor: float = 1.5) -> tuple[int, int, int]:
    """DeepSpeed stage3.py estimate_zero3_model_states_mem_needs -> (cpu_mem, gpu_mem, largest_layer_mem)."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = (4 * largest_layer_params)
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            if zero_init:
                cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = (total_params * max(4 * num_gpus_per_node, 18 * gpus_factor)
                           * additional_buffer_factor)
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            if zero_init:
                cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = (total_params * max(4 * num_gpus_per_node, 16 * gpus_factor)
                           * additional_buffer_factor)
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


@pytest.fixture(scope="module")
def mistral():  # type: ignore[no-untyped-def]
    return presets.find_model("mistral-7b")


def model_states(b) -> int:  # type: ignore[no-untyped-def]
    """What DeepSpeed's estimators call GPU memory: params, grads and optimizer states (with fp32 grads)."""
    return b.weights + b.gradients + b.optimizer_state + b.details["temporaries.optimizer_step"]


def ds_run(**kw: object) -> TrainingSpec:
    # DeepSpeed's accounting: bf16/fp16 params and grads, fp32 master + Adam moments, fused Adam.
    return TrainingSpec(precision="mixed-bf16", optimizer="adamw", method="full", **kw)  # type: ignore[arg-type]


def test_inputs(mistral) -> None:  # type: ignore[no-untyped-def]
    assert count_params(mistral) == MISTRAL_PARAMS
    # DeepSpeed's model_to_params: max over modules of sum(p.numel() for p in m.parameters(recurse=False)).
    assert largest_module_params(mistral) == MISTRAL_LARGEST


GRID = [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (8, 4)]


@pytest.mark.parametrize("gpus,nodes", GRID, ids=[f"{g}x{n}" for g, n in GRID])
@pytest.mark.parametrize("offload", [False, True], ids=["no-offload", "offload-optimizer"])
def test_zero2_matches_deepspeed(mistral, gpus: int, nodes: int, offload: bool) -> None:  # type: ignore[no-untyped-def]
    cpu_ds, gpu_ds = ds_zero2(MISTRAL_PARAMS, gpus, nodes, cpu_offload=offload)
    b = estimate(mistral, ds_run(zero=2, gpus_per_node=gpus, nodes=nodes,
                                 offload="optimizer" if offload else "none"))
    assert model_states(b) == gpu_ds
    if offload and gpus * nodes <= 4:
        # Host: fp32 master 4 + moments 8 + fp32 grads 4 = 16 bytes per parameter per node; DeepSpeed
        # takes max(4 × total_gpus, 16) (the fp32 model each process loads) × 1.5, equal up to 4 GPUs.
        assert b.cpu_offload_bytes * 3 // 2 == cpu_ds


@pytest.mark.parametrize("gpus,nodes", GRID, ids=[f"{g}x{n}" for g, n in GRID])
@pytest.mark.parametrize("offload", ["none", "optimizer", "params"])
def test_zero3_matches_deepspeed(mistral, gpus: int, nodes: int, offload: str) -> None:  # type: ignore[no-untyped-def]
    cpu_ds, gpu_ds, _ = ds_zero3(MISTRAL_PARAMS, MISTRAL_LARGEST, gpus, nodes, cpu_offload=offload != "none",
                                 cpu_offload_params=offload == "params", zero_init=True)
    b = estimate(mistral, ds_run(zero=3, gpus_per_node=gpus, nodes=nodes, offload=offload))
    assert model_states(b) == gpu_ds
    if offload != "none":
        # zero_init: 16 (optimizer offload) or 18 (+ 16-bit params) bytes per parameter / nodes, × 1.5.
        assert b.cpu_offload_bytes * 3 // 2 == cpu_ds


def test_zero1_is_zero2_before_gradient_partitioning(mistral) -> None:  # type: ignore[no-untyped-def]
    # ZeRO paper §5.1 P_os: 2 (bf16 params) + 2 (bf16 grads) + (4 + 8 + 4) / N: 4 + 16/8 = 6 bytes per param.
    b = estimate(mistral, ds_run(zero=1, gpus_per_node=8))
    assert model_states(b) == 6 * MISTRAL_PARAMS


def test_ds_buckets_are_counted_apart(mistral) -> None:  # type: ignore[no-untyped-def]
    b = estimate(mistral, ds_run(zero=3, gpus_per_node=8))
    # reduce_bucket_size 5e8 bf16 elements + stage3_prefetch_bucket_size 5e7 (zero/config.py defaults).
    assert b.details["communication.reduce_bucket"] == 1_000_000_000
    assert b.details["communication.prefetch_bucket"] == 100_000_000
    assert b.communication == 1_100_000_000


def test_ddp_costs_one_more_gradient(mistral) -> None:  # type: ignore[no-untyped-def]
    one = estimate(mistral, ds_run())
    two = estimate(mistral, ds_run(gpus_per_node=2))
    # DDP's reducer buckets copy every bf16 gradient: 2 × 7,241,732,096 bytes.
    assert two.communication == 2 * MISTRAL_PARAMS
    assert two.tensor_peak_bytes - one.tensor_peak_bytes == 2 * MISTRAL_PARAMS


STRATEGIES = [{"zero": 1}, {"zero": 2}, {"zero": 3}, {"fsdp": "full-shard"}, {"fsdp": "shard-grad-op"},
              {"zero": 3, "offload": "params"}, {"fsdp": "full-shard", "offload": "params"}]
MODELS = ["mistral-7b", "llama-3.2-1b", "gpt2", "gemma-2-2b", "mixtral-8x7b"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_more_gpus_never_need_more_per_gpu(name: str, strategy: dict[str, object]) -> None:
    m = presets.find_model(name)
    peaks = []
    for g, n in [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (8, 16)]:
        b = estimate(m, ds_run(gpus_per_node=g, nodes=n, **strategy))
        assert b.peak_bytes <= b.sum_bytes  # peak ≤ sum of components
        peaks.append(b.peak_bytes)
    # Going from 1 GPU to several adds NCCL's fixed buffers (memory/overhead.py, 128 MiB), which a
    # fully offloaded run does not win back; beyond that, more GPUs never need more per GPU.
    assert peaks[1] <= peaks[0] + nccl_buffer_bytes(2)
    assert peaks[1:] == sorted(peaks[1:], reverse=True)


@pytest.mark.parametrize("name", ["mistral-7b", "llama-3.2-1b", "gemma-2-2b", "mixtral-8x7b"])
@pytest.mark.parametrize("precision", ["mixed-bf16", "bf16", "amp-bf16"])
def test_higher_zero_stage_never_needs_more(name: str, precision: str) -> None:
    m = presets.find_model(name)
    for gpus in (2, 8):
        peaks = [estimate(m, TrainingSpec(precision=precision, gpus_per_node=gpus, zero=z)).peak_bytes
                 for z in (0, 1, 2, 3)]
        assert peaks == sorted(peaks, reverse=True), (gpus, peaks)


def test_zero3_fixed_buffers_can_outweigh_its_savings_on_a_tiny_model() -> None:
    # GPT-2 (124,439,808 params) on 2 GPUs: ZeRO-3 saves half the bf16 weights (124,439,808 bytes) but
    # gathers the largest module (wte, 50,257 × 768 = 38,597,376 params) with its gradient (4 × 38,597,376 =
    # 154,389,504 bytes) and keeps a 5e7-element prefetch bucket (100,000,000 bytes): more than ZeRO-2.
    m = presets.find_model("gpt2")
    z2 = estimate(m, ds_run(zero=2, gpus_per_node=2))
    z3 = estimate(m, ds_run(zero=3, gpus_per_node=2))
    # Model states: ZeRO-2 2P + 18P/2 = 11P; ZeRO-3 4L + 18P/2: 2P - 4L = 248,879,616 - 154,389,504 apart.
    assert model_states(z2) - model_states(z3) == 94_490_112
    assert z3.communication - z2.communication == 100_000_000
    assert z3.peak_bytes > z2.peak_bytes


def test_lora_with_zero3_shards_the_frozen_base(mistral) -> None:  # type: ignore[no-untyped-def]
    one = estimate(mistral, TrainingSpec(method="lora"))
    eight = estimate(mistral, TrainingSpec(method="lora", zero=3, gpus_per_node=8))
    assert eight.details["weights.partition"] == -(-one.weights // 8)  # ceil(bf16 base + fp32 adapters / 8)


def test_tensor_and_pipeline_parallel_split_weights(mistral) -> None:  # type: ignore[no-untyped-def]
    assert model_parallel_params(mistral, 1, 1) == MISTRAL_PARAMS
    half = model_parallel_params(mistral, 2, 1)
    # Linear, embedding and head split in two; 65 RMSNorm vectors of 4,096 stay whole:
    # (P - 266,240) / 2 + 266,240.
    assert half == (MISTRAL_PARAMS - 65 * 4096) // 2 + 65 * 4096
    # pp 2: 16 layers of 218,112,000 parameters + the larger end (final norm + lm_head: 4,096 + 131,072,000).
    assert model_parallel_params(mistral, 1, 2) == 16 * 218_112_000 + 4096 + 131_072_000
    b = estimate(mistral, TrainingSpec(gpus_per_node=4, tp=2, pp=2))
    assert b.weights == -(-2 * MISTRAL_PARAMS * model_parallel_params(mistral, 2, 2) // MISTRAL_PARAMS)


def test_sequence_parallel_activation_tokens() -> None:
    # Korthikanti et al. 2022: sbh(10 + 24/t) of sbh·34 without SP; 1/t with SP. 4096 tokens, t = 4:
    assert activation_tokens(4096, TrainingSpec(tp=4, gpus_per_node=4)) == -(-4096 * 64 // 136)  # 1928
    assert activation_tokens(4096, TrainingSpec(tp=4, gpus_per_node=4, sequence_parallel=True)) == 1024
    assert activation_tokens(4096, TrainingSpec()) == 4096


def test_min_gpus_is_exact_at_the_boundary(mistral) -> None:  # type: ignore[no-untyped-def]
    gpu = presets.find_gpu("a100-40gb")
    t = ds_run(zero=3, seq_len=2048, grad_checkpointing=True)
    n = min_gpus(mistral, t, gpu)
    assert n is not None
    layouts = gpu_counts(t)
    totals = [g * k for g, k in layouts]
    i = totals.index(n)
    fits = lambda g, k: estimate(mistral, replace(t, gpus_per_node=g, nodes=k)).peak_bytes \
        <= gpu.memory_bytes  # noqa: E731
    assert fits(*layouts[i])
    assert i == 0 or not fits(*layouts[i - 1])


def test_min_gpus_without_sharding(mistral) -> None:  # type: ignore[no-untyped-def]
    # Plain data parallelism replicates everything: if one 24 GiB GPU is too small, so are a thousand.
    assert min_gpus(mistral, TrainingSpec(), presets.find_gpu("rtx4090")) is None
    assert min_gpus(presets.find_model("gpt2"), TrainingSpec(), presets.find_gpu("h100")) == 1


@pytest.mark.parametrize("args,message", [
    (["--zero", "2", "--fsdp", "full-shard"],
     "error: choose DeepSpeed ZeRO or FSDP, not both: drop --zero or --fsdp"),
    (["--offload", "params", "--zero", "2"],
     "error: parameter offload needs sharded parameters: add --zero 3 or --fsdp full-shard"),
    (["--gpus", "6", "--tp", "4"],
     "error: 6 GPUs cannot be split into tp 4 × pp 1: make --gpus × --nodes a multiple of --tp × --pp"),
    (["--zero", "4"], "error: --zero: Input should be 0, 1, 2 or 3"),
])
def test_bad_layouts_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["estimate", "mistral-7b", *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output


def test_json_reports_layout_and_host_ram() -> None:
    import json

    result = runner.invoke(app, ["estimate", "mistral-7b", "--precision", "mixed-bf16", "--gpus", "8",
                                 "--zero", "3", "--offload", "params", "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["per_gpu"] is True
    assert doc["parallelism"]["world_size"] == 8 and doc["parallelism"]["strategy"] == "zero-3"
    # 18 bytes per parameter on one node's host (DeepSpeed ZeRO-3 offload_param, zero_init, before × 1.5).
    assert doc["cpu_offload_bytes"] == 18 * MISTRAL_PARAMS
    assert doc["components"]["communication"] == 1_100_000_000


def test_autocast_copies_under_full_sharding_are_the_gathered_units_only() -> None:
    """Issue 18: Llama-2-70B LoRA, amp-bf16, FSDP full-shard on 8 GPUs counted 16-bit autocast copies of the
    whole model on every GPU (137 GB of 'activations', a 230 GB estimate). Under full sharding only the gathered
    units (root + current + prefetched layer, memory/distributed.py gathered_cast_params) are cast at once."""
    from vramcalc.core.params import block_linears

    m = presets.find_model("llama-2-70b")
    one = TrainingSpec(method="lora", precision="amp-bf16")
    sharded = replace(one, fsdp="full-shard", gpus_per_node=8)
    whole = estimate(m, one).details["activations.autocast_weight_copies"]
    # 2 B × (every block Linear + the head) — the unsharded run's figure, derived from the architecture — less layer
    # 0's q, k, v casts (8,192 x 8,192 and 2 x 1,024 x 8,192: without checkpointing its input needs no gradient, so
    # those frozen Linears save none; memory/__init__.py _bottom_unsaved_casts)
    linear = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m))
    assert m.vocab_size is not None and m.hidden_size is not None
    assert whole == 2 * (linear + m.vocab_size * m.hidden_size) - 2 * (8_192 * 8_192 + 2 * 1_024 * 8_192)
    got = estimate(m, sharded).details["activations.autocast_weight_copies"]
    # Issue 19: the gathered units' own Linear weights, the head (root unit) + 2 layers' block Linears (was their
    # parameter share of every Linear, 4,454,131,770 B): 2 B × (32,000 × 8,192 + 2 × 855,638,016) = 3,946,840,064.
    assert m.num_layers is not None
    assert got == 2 * (m.vocab_size * m.hidden_size + 2 * linear // m.num_layers)
    assert got < whole // 8  # root + 2 of 80 layers: far less than even an eighth of the model
    b = estimate(m, sharded)
    assert b.peak_bytes < 80 * 10**9  # it fits an 80 GB card now (was 218 GB: the whole model's copies)
    assert any("autocast under full sharding" in n for n in b.notes)
    # DDP (no sharding) keeps the whole model's copies on every GPU
    ddp = replace(one, gpus_per_node=8)
    assert estimate(m, ddp).details["activations.autocast_weight_copies"] == whole


def test_fsdp_no_sync_keeps_unsharded_gradients(mistral) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: under FSDP's no_sync (HF Trainer / accelerate / Lightning accumulate) every unit's gradient stays
    unsharded until the last micro-batch (torch fsdp _runtime_utils.py _post_backward_hook; measured by
    benchmarks/fsdp_grads.py); reducing every micro-batch keeps the shard plus one unit's unsharded gradient."""
    base = TrainingSpec(precision="bf16", fsdp="full-shard", gpus_per_node=8, grad_accum=4)
    deferred = estimate(mistral, base)
    each = estimate(mistral, replace(base, grad_sync="every-micro-batch"))
    # bf16 gradients of every parameter: 2 B × 7,241,732,096, on every GPU
    assert deferred.gradients == 2 * MISTRAL_PARAMS == deferred.details["gradients.unsharded_deferred"]
    assert each.gradients < deferred.gradients // 4  # an eighth plus one layer's unit
    assert any("no_sync" in n for n in deferred.notes)
    # one micro-batch: nothing to defer, the two agree
    single = replace(base, grad_accum=1)
    assert estimate(mistral, single).gradients == estimate(mistral, replace(single, grad_sync="every-micro-batch")
                                                          ).gradients
    # DeepSpeed reduces every micro-batch whatever --grad-sync says
    z3 = TrainingSpec(precision="bf16", zero=3, gpus_per_node=8, grad_accum=4)
    assert estimate(mistral, z3).gradients == estimate(mistral, replace(z3, grad_sync="every-micro-batch")).gradients


def test_fsdp_frozen_grads_cover_every_layer_unit(mistral) -> None:  # type: ignore[no-untyped-def]
    """FSDP1 use_orig_params=True: a unit whose flat parameter holds adapters and frozen weights requires grad as a
    whole (torch fsdp _flat_param.py), so with no_sync each GPU holds every layer's full gradient (litgpt LoRA FSDP,
    published readings: 22.18 GB per GPU for Llama-2-7B on 2 GPUs)."""
    from vramcalc.core.memory.distributed import layer_and_root_params

    lora = TrainingSpec(method="lora", precision="pure-bf16", adapter_dtype="bf16", fsdp="full-shard",
                        gpus_per_node=2, grad_accum=128)
    plain = estimate(mistral, lora)
    flat = estimate(mistral, replace(lora, fsdp_frozen_grads=True))
    layer, root = layer_and_root_params(mistral)
    assert mistral.num_layers is not None
    assert layer * mistral.num_layers + root == MISTRAL_PARAMS
    frozen = 2 * layer * mistral.num_layers  # bf16 gradient of every layer weight; the root unit has no adapter
    assert flat.details["gradients.frozen_in_units"] == frozen
    assert flat.gradients == plain.gradients + frozen  # unsharded: the adapters' and the frozen weights' gradients
    synced = estimate(mistral, replace(lora, fsdp_frozen_grads=True, grad_sync="every-micro-batch"))
    one_unit = -(-flat.gradients // mistral.num_layers)
    assert synced.gradients == -(-flat.gradients // 2) + one_unit  # the shard of the flat grads + one unit


@pytest.mark.parametrize("args", [["--method", "lora", "--fsdp-frozen-grads"],
                                  ["--method", "full", "--fsdp", "full-shard", "--fsdp-frozen-grads"]])
def test_fsdp_frozen_grads_needs_lora_under_fsdp(args: list[str]) -> None:
    result = runner.invoke(app, ["estimate", "mistral-7b", *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --fsdp-frozen-grads is about LoRA adapters sharing FSDP units with "
                                     "frozen weights: use it with --method lora and --fsdp, or drop it")
