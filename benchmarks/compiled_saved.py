"""What a torch.compile'd decoder layer and chunked loss save for backward, measured on the CPU (issue 13, --compile).

AOTAutograd splits a compiled region's joint forward-backward graph with min_cut_rematerialization_partition
(torch/_functorch/partitioners.py), and what the forward graph hands to the backward is what stays alive from a
layer's forward to its backward. That choice is made on the graph, before any kernel is generated, so it is the same
for inductor's C++ (CPU) and Triton (CUDA) kernels; the CPU measures it. The saved tensors go through
torch.autograd.graph.saved_tensors_hooks (CompiledFunction.forward calls ctx.save_for_backward), so a pack hook sees
each one: this counts their distinct storages, less the weights and the shared RoPE cos / sin, the layer's input
included (the compiled graph saves it; eager transformers saves its fp32 copy instead).

Three regions: two as torchtune compiles them (training/_compile.py @ v0.6.1): each decoder layer (`compile_model`:
`layer.compile()`; here a transformers 5.24 LlamaDecoderLayer / Qwen2DecoderLayer, SDPA, one layer of a toy), and
CEWithChunkedOutputLoss.compute_cross_entropy (`compile_loss`: `F.cross_entropy(logits.float(), labels,
reduction="sum")` on one chunk's 16-bit logits, torchtune modules/loss/ce_chunked_output_loss.py), and the whole
model with its loss as transformers' Trainer compiles it (accelerate's `torch.compile(model)`; bf16, untied), the
eager runs beside them. The rows are bytes per token; core/memory/compiled.py models them and tests/test_compile.py
checks the model against every row (and measures one case live).

Each layer row also has the layer's forward and backward peaks above their starts (the CPU allocator's live bytes from
torch.profiler's memory events, benchmarks/compile_peaks.py step_peak_bytes): forward from the input's copy on (the
saved set, the output and the temporaries), backward from the incoming gradient on, with the saved set alive at its
start, and the forward's peak under non-reentrant checkpointing (a compiled forward returns its whole saved set
before the checkpoint's hooks drop it). They include the CPU kernels' own buffers (SDPA's per-thread workspace), which
CUDA's differ from.

Usage:  PYTHONPATH=src python benchmarks/compiled_saved.py   (needs a C++ compiler for inductor; ~2 min)
Writes benchmarks/results/compiled_saved.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_peaks import step_peak_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "compiled_saved.json"
# (arch, hidden, intermediate, heads, kv heads, batch, seq): GQA 3:1 with Llama-3.2-3B's ratios (hidden 3072,
# intermediate 8192, 24 / 8 heads), MHA, another GQA width and a longer sequence
LAYER_SHAPES = (
    ("llama", 384, 1024, 6, 2, 2, 512),
    ("llama", 256, 704, 4, 4, 1, 1024),
    ("llama", 512, 1376, 8, 2, 2, 256),
    ("qwen2", 384, 1024, 6, 2, 2, 512),
    ("qwen2", 256, 704, 4, 4, 1, 1024),
)
LOSS_SHAPES = ((2, 512, 4096, 8), (1, 1024, 8192, 8), (2, 256, 4096, 4))  # (batch, seq, vocab, chunks)
# LoRA per layer (torchtune's recipes compile LoRA models the same way): peft r 16, dropout 0, on a bf16 model,
# (arch, hidden, intermediate, heads, kv heads, batch, seq, targets, adapter dtype)
LORA_RANK = 16
ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
LORA_SHAPES = tuple((*shape, targets, adapter) for shape in (("llama", 384, 1024, 6, 2, 2, 512),
                                                              ("qwen2", 256, 704, 4, 4, 1, 1024))
                    for targets in ("q_proj,v_proj", ALL_LINEAR, "o_proj,down_proj") for adapter in ("bf16", "fp32"))
# The whole model compiled (transformers' Trainer via accelerate: torch.compile(model), the loss in its forward):
# (arch, hidden, intermediate, heads, kv heads, vocab, layers, batch, seq), bf16, untied
MODEL_SHAPES = (
    ("llama", 256, 704, 4, 2, 4096, 2, 2, 512),
    ("qwen2", 256, 704, 4, 2, 4096, 2, 2, 512),
    ("llama", 384, 1024, 4, 2, 8192, 2, 1, 1024),
)


def saved_bytes(run: Any, exclude: set[int]) -> int:
    """Bytes of the distinct storages the autograd graph saves while `run()` builds it, less `exclude`'s."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen.setdefault(s.data_ptr(), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    total = sum(n for ptr, n in seen.items() if ptr not in exclude)
    out.float().sum().backward()  # frees the graph (and checks it runs)
    return total


def layer_row(arch: str, h: int, i: int, heads: int, kv: int, batch: int, seq: int, dtype_name: str,
              backend: str, lora: str = "", adapter: str = "fp32") -> dict[str, Any]:
    """Bytes per token one decoder layer saves, eager (backend none) or compiled per layer. `lora`: peft LoRA (r 16,
    dropout 0) on these comma-separated modules, its adapters in `adapter` (fp32: peft's autocast_adapter_dtype; bf16:
    the model's, as torchtune builds them); empty: full fine-tuning."""
    import torch
    import transformers

    torch._dynamo.reset()
    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    cls = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    cfg = cls(vocab_size=512, hidden_size=h, intermediate_size=i, num_hidden_layers=1, num_attention_heads=heads,
              num_key_value_heads=kv, max_position_embeddings=2048, attn_implementation="sdpa")
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    decoder = model.get_decoder()
    if lora:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=LORA_RANK, target_modules=lora.split(","),
                                                           lora_dropout=0.0),
                                    autocast_adapter_dtype=adapter == "fp32")
    layer = decoder.layers[0]
    if backend == "inductor":
        layer.compile(backend="inductor")
    x0 = torch.randn(batch, seq, h, dtype=dtype, requires_grad=True)
    pos = torch.arange(seq)[None].expand(batch, seq)
    cos, sin = decoder.rotary_emb(x0, pos)
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    exclude |= {t.untyped_storage().data_ptr() for t in (cos, sin)}

    def run() -> Any:
        out = layer(x0 * 1, position_embeddings=(cos, sin), attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    saved_bytes(run, exclude)  # the first call compiles
    total = saved_bytes(run, exclude)
    box: dict[str, Any] = {"grad": torch.randn(batch, seq, h, dtype=dtype)}

    def forward() -> None:
        box["out"] = run()

    def backward() -> None:
        box.pop("out").backward(box["grad"])

    forward_peak = step_peak_bytes(forward)
    backward_peak = step_peak_bytes(backward)

    def checkpointed() -> None:  # transformers' / torchtune's non-reentrant checkpoint around the layer
        box["out"] = torch.utils.checkpoint.checkpoint(run, use_reentrant=False)

    checkpointed_peak = step_peak_bytes(checkpointed)
    box.pop("out").backward(box["grad"])
    tokens = batch * seq
    return {"region": "layer", "arch": arch, "hidden": h, "intermediate": i, "heads": heads, "kv_heads": kv,
            "batch": batch, "seq": seq, "dtype": dtype_name, "backend": backend, "method": "lora" if lora else "full",
            "lora_targets": lora, "adapter_dtype": adapter if lora else "", "saved_bytes": total,
            "saved_per_token": total / tokens, "forward_peak_per_token": forward_peak / tokens,
            "backward_peak_per_token": backward_peak / tokens,
            "checkpointed_forward_peak_per_token": checkpointed_peak / tokens}


def model_row(arch: str, h: int, i: int, heads: int, kv: int, vocab: int, layers: int, batch: int, seq: int,
              backend: str) -> dict[str, Any]:
    """Bytes per token a whole bf16 causal LM saves with its loss (`model(input_ids, labels).loss`), compiled whole
    or eager, and its forward / backward peaks above their starts."""
    import torch
    import transformers

    torch._dynamo.reset()
    torch.manual_seed(0)
    cls = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    cfg = cls(vocab_size=vocab, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
              attn_implementation="sdpa", tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    forward_fn = torch.compile(model, backend="inductor") if backend == "inductor" else model
    ids = torch.randint(0, vocab, (batch, seq))
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    box: dict[str, Any] = {}

    def run() -> Any:
        return forward_fn(input_ids=ids, labels=ids).loss

    saved_bytes(run, exclude)  # the first call compiles
    total = saved_bytes(run, exclude)

    def forward() -> None:
        box["loss"] = run()

    def backward() -> None:
        box.pop("loss").backward()

    forward_peak = step_peak_bytes(forward)
    backward_peak = step_peak_bytes(backward)
    tokens = batch * seq
    return {"region": "model", "arch": arch, "hidden": h, "intermediate": i, "heads": heads, "kv_heads": kv,
            "vocab": vocab, "layers": layers, "batch": batch, "seq": seq, "dtype": "bfloat16", "backend": backend,
            "saved_bytes": total, "saved_per_token": total / tokens, "forward_peak_per_token": forward_peak / tokens,
            "backward_peak_per_token": backward_peak / tokens}


def loss_row(batch: int, seq: int, vocab: int, chunks: int, backend: str) -> dict[str, Any]:
    """Bytes per token the chunked loss saves beyond the 16-bit logit chunks it is handed (the chunks count when
    the loss saves them: the model's projections do not)."""
    import torch
    import torch.nn.functional as F

    torch._dynamo.reset()
    torch.manual_seed(0)

    def compute_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")

    ce = torch.compile(compute_cross_entropy, backend="inductor") if backend == "inductor" else compute_cross_entropy
    labels = torch.randint(0, vocab, (batch, seq))
    logits = torch.randn(batch, seq, vocab, dtype=torch.bfloat16, requires_grad=True)

    def run() -> Any:
        # torchtune's chunked_output: one 16-bit logits tensor per chunk (copies here, the projections' outputs there)
        parts = [ce(c.reshape(-1, vocab) * 1, y.reshape(-1))
                 for c, y in zip(logits.tensor_split(chunks, dim=1), labels.tensor_split(chunks, dim=1), strict=True)]
        return sum(parts) / labels.numel()

    exclude = {logits.untyped_storage().data_ptr()}
    saved_bytes(run, exclude)
    total = saved_bytes(run, exclude)
    tokens = batch * seq
    return {"region": "chunked-loss", "batch": batch, "seq": seq, "vocab": vocab, "chunks": chunks,
            "dtype": "bfloat16", "backend": backend, "saved_bytes": total, "saved_per_token": total / tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for shape in LAYER_SHAPES:
        for dtype_name in ("bfloat16", "float32"):
            for backend in ("none", "inductor"):
                rows.append(layer_row(*shape, dtype_name, backend))
                print(json.dumps(rows[-1]), flush=True)
    for arch, h, i, heads, kv, batch, seq, targets, adapter in LORA_SHAPES:
        rows.append(layer_row(arch, h, i, heads, kv, batch, seq, "bfloat16", "inductor", targets, adapter))
        print(json.dumps(rows[-1]), flush=True)
    for shape in LOSS_SHAPES:
        for backend in ("none", "inductor"):
            rows.append(loss_row(*shape, backend))
            print(json.dumps(rows[-1]), flush=True)
    for model_shape in MODEL_SHAPES:
        for backend in ("none", "inductor"):
            rows.append(model_row(*model_shape, backend))
            print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
