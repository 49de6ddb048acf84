"""Zamba2: what vramcalc reads of it and what it refuses, in one place.

Source: transformers 5.24 models/zamba2/modeling_zamba2.py. Zamba2Model runs len(layers_block_type) layers: a
Zamba2MambaDecoderLayer (input_layernorm, Zamba2MambaMixer: Mamba-2's in_proj, conv1d, mamba2_chunk_scan, gated
RMSNorm, out_proj; residual add) or, at hybrid_layer_ids, a Zamba2HybridLayer: a shared Zamba2AttentionDecoderLayer
(concat(hidden, the embeddings' clone) 2 x hidden wide, input_layernorm, attention with q/k/v from 2 x hidden, o_proj
to hidden, pre_ff_layernorm, Zamba2MLP with its per-invocation gate_up_proj projector), then its own Linear(hidden,
hidden), whose output is added to the residual before the Mamba layer's input_layernorm. Every invocation of a shared
block saves its own activations; its weights are counted once (params.zamba2_tensors).

The parameter count and the weights are exact (tests/test_zamba2.py against Zamba2ForCausalLM's sum(p.numel())).
The step's activations are not modelled yet: every estimate of a Zamba2 model is refused in one line rather than
counted as a plain decoder's. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import is_zamba2

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_zamba2", "check_run"]


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse every Zamba2 estimate in one line: its activations (the shared blocks' per-invocation saved sets over a
    2 x hidden wide input, the Mamba-2 mixers, the per-layer Linear) are not modelled."""
    if not is_zamba2(m):
        return
    from vramcalc.core.errors import UnsupportedCombination

    raise UnsupportedCombination(f"--mode {t.mode} on {m.name}: Zamba2's step memory (the shared attention blocks "
                                 "re-run at each hybrid layer beside the Mamba-2 mixers) is not modelled; its "
                                 f"parameter count is exact: vramcalc show {m.name}")
