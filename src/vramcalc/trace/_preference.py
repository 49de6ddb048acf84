"""TRL's fused LM head and its DPO step, run on the traced model (memory/preference.py models the same).

TRL 1.16 (trl/trainer/utils.py add_fused_lm_head, trl/kernels/chunked_logprob.py ChunkedLogProbFunction)
replaces the logits by per-token log-probabilities computed in tiles: the backbone's last hidden states
are sliced (`[:, :-1]`), the completion positions gathered (`hidden_states[mask]`, a copy of N × H), and
the projection runs on `[min(N, 4096), 32768]` tiles of one reused buffer, folded by a Triton kernel into
seven fp32 per-token statistics. Backward recomputes each tile and accumulates fp32 gradients for the
hidden states (N × H) and the head weight (V × H), cast to the inputs' dtypes at the end. Triton cannot
run on fake tensors, so `_FusedLogProb` allocates what the CUDA path allocates (the kernels themselves
allocate nothing) and runs the tile matmuls into the buffer as the real code does.

`dpo_loss` is DPOTrainer._compute_loss (trl/trainer/dpo_trainer.py): one forward of the policy over the
chosen and rejected sequences stacked along the batch (DataCollatorForPreference: 2B rows padded to the
longest), then the reference's forward under no_grad (a frozen copy, or the same peft model inside
`disable_adapter()`), then the sigmoid loss on the summed log-probs; the policy's outputs stay alive
until the loss is returned. `reward_loss` is RewardTrainer.compute_loss on a sequence-classification model.
The gather uses two int64 index tensors where TRL indexes with the boolean mask (aten.index turns it into
the same index pairs): the output, its saved state and its backward (index_put into zeros) are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

TOKEN_CHUNK_SIZE = 4096  # trl/kernels/chunked_logprob.py
VOCAB_CHUNK_SIZE = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE
N_STATS = 7  # running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum, max_before_target, target_logit


class _FusedLogProb(torch.autograd.Function):
    """ChunkedLogProbFunction's CUDA allocations (Triton fold kernels emulated as no-ops)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                outputs: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        dev = hidden.device
        n = hidden.shape[0]
        vocab = weight.shape[0]
        # chunked_logprob.py: the autocast dtype when autocast is on (accelerate wraps the patched forward in it), else
        # the hidden states' dtype; the tracer's CUDA autocast runs as CPU autocast (_cuda.cuda_autocast), so read that
        # (the CUDA query alone gave an fp32 [4096, 32768] buffer under amp: a DPO LoRA amp-bf16 toy 39 % over its
        # estimate, which counts the bf16 buffer TRL allocates)
        amp = torch.is_autocast_enabled("cpu")
        cd = torch.get_autocast_dtype("cpu") if amp else hidden.dtype
        stats = [torch.zeros(n, device=dev, dtype=torch.float32) for _ in range(N_STATS)]
        mm_buf = torch.empty((min(n, TOKEN_CHUNK_SIZE), VOCAB_CHUNK_SIZE), device=dev, dtype=cd)
        for t0 in range(0, n, TOKEN_CHUNK_SIZE):
            t1 = min(t0 + TOKEN_CHUNK_SIZE, n)
            hidden_chunk = hidden[t0:t1].to(cd)
            for v0 in range(0, vocab, VOCAB_CHUNK_SIZE):
                v1 = min(v0 + VOCAB_CHUNK_SIZE, vocab)
                tile = mm_buf[: t1 - t0, : v1 - v0]
                torch.mm(hidden_chunk, weight[v0:v1].to(cd).t(), out=tile)
            del hidden_chunk
        running_max, sum_exp, x_sum_exp, _sq, z_sum, _mbt, target_logit = stats
        log_z = running_max + torch.log(sum_exp)
        logprobs = target_logit - log_z
        entropy = log_z - x_sum_exp / sum_exp if "entropy" in outputs else None
        mean_logits = z_sum / vocab if "mean_logits" in outputs else None
        is_top1 = (target_logit >= running_max) & (target_logit > _mbt) if "is_top1" in outputs else None
        ctx.save_for_backward(hidden, weight, targets, log_z, log_z if entropy is None else entropy)
        ctx.cd = cd
        ctx.set_materialize_grads(False)
        outs = tuple(x for x in (logprobs, entropy, mean_logits, is_top1) if x is not None)
        ctx.mark_non_differentiable(*(x for x in (mean_logits, is_top1) if x is not None))
        return outs

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor | None, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        hidden, weight, targets, log_z, entropy = ctx.saved_tensors
        cd = ctx.cd
        n, vocab = hidden.shape[0], weight.shape[0]
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_hidden = torch.zeros(hidden.shape, device=hidden.device, dtype=torch.float32) if need_h else None
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if need_w else None
        mm_buf = torch.empty((min(n, TOKEN_CHUNK_SIZE), VOCAB_CHUNK_SIZE), device=hidden.device, dtype=cd)
        g = grad_logprobs.float().contiguous() if grad_logprobs is not None else None
        for t0 in range(0, n, TOKEN_CHUNK_SIZE):
            t1 = min(t0 + TOKEN_CHUNK_SIZE, n)
            hidden_chunk = hidden[t0:t1].to(cd)
            for v0 in range(0, vocab, VOCAB_CHUNK_SIZE):
                v1 = min(v0 + VOCAB_CHUNK_SIZE, vocab)
                w_chunk = weight[v0:v1].to(cd)
                tile = mm_buf[: t1 - t0, : v1 - v0]
                torch.mm(hidden_chunk, w_chunk.t(), out=tile)
                # _addmm_fp32: torch.addmm(acc, a, b, out_dtype=float32, out=acc) on CUDA: no temporary
                del w_chunk
            del hidden_chunk
        del g
        return (grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
                grad_weight.to(weight.dtype) if grad_weight is not None else None, None, None)


def _parts(m: nn.Module) -> tuple[nn.Module, nn.Module]:
    hf: Any = m.get_base_model() if hasattr(m, "get_base_model") else m  # peft
    return hf.base_model, hf.get_output_embeddings()


def fused_forward(m: nn.Module, input_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  mask: torch.Tensor, outputs: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """add_fused_lm_head's `_fused_forward` (fused_lm_head=True): per-position log-probs, no logits.

    `rows`, `cols`: the N completion positions of the shifted labels; `mask`: the same as a boolean
    [batch, seq - 1] tensor (labels != -100).
    """
    body, head = _parts(m)
    last = body(input_ids=input_ids, use_cache=False).last_hidden_state
    hidden_states = last[:, :-1]
    labels = input_ids[:, 1:]  # the values do not matter; the gathered targets are a new int64 [N] tensor
    compact = hidden_states[rows, cols]
    targets = labels[rows, cols]
    per_token = _FusedLogProb.apply(compact, head.weight, targets, outputs)
    del compact, targets, hidden_states, last
    out = {name: x.new_zeros(mask.shape).masked_scatter(mask, x) for name, x in zip(outputs, per_token, strict=True)}
    out["loss"] = -out["log_probs"].sum() / mask.sum().clamp(min=1)
    return out


POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # dpo_trainer.py: add_fused_lm_head outputs
SFT_OUTPUTS = ("log_probs", "entropy", "is_top1")  # sft_trainer.py


def make_dpo_inputs(batch: int, seq: int, prompt: int, vocab: int, precomputed: bool,
                    kto: bool = False) -> Callable[[], dict[str, Any]]:
    """DataCollatorForPreference's batch: 2·batch rows (chosen then rejected) padded to `seq`; for KTO, batch
    completions and batch KL rows of the same shape."""
    rows_n = batch if kto else 2 * batch
    per_row = min(seq - prompt, seq - 1)  # completion positions among the shifted labels

    def make() -> dict[str, Any]:
        ids = torch.randint(0, vocab, (rows_n, seq), dtype=torch.long)
        attention_mask = torch.ones((rows_n, seq), dtype=torch.long)
        completion_mask = torch.ones((rows_n, seq), dtype=torch.long)
        mask = torch.ones((rows_n, seq - 1), dtype=torch.bool)
        n = rows_n * per_row
        rows = torch.randint(0, rows_n, (n,), dtype=torch.long)
        cols = torch.randint(0, seq - 1, (n,), dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
               "mask": mask, "rows": rows, "cols": cols}
        if kto:
            out["KL_input_ids"] = torch.randint(0, vocab, (rows_n, seq), dtype=torch.long)
            out["KL_attention_mask"] = torch.ones((rows_n, seq), dtype=torch.long)
            out["KL_completion_mask"] = torch.ones((rows_n, seq), dtype=torch.long)
            out["label"] = torch.ones(rows_n, dtype=torch.bool)
        if precomputed and kto:
            out["ref_logps"] = torch.zeros(batch)
            out["ref_KL_logps"] = torch.zeros(batch)
        elif precomputed:
            out["ref_chosen_logps"] = torch.zeros(batch)
            out["ref_rejected_logps"] = torch.zeros(batch)
        return out

    return make


@contextlib.contextmanager
def _reference(m: nn.Module, adapters_off: bool, policy_outputs: tuple[str, ...]
               ) -> Iterator[tuple[nn.Module, tuple[str, ...]]]:
    """Under no_grad, the reference and the outputs its fused head computes: the policy inside peft's
    disable_adapter() (its head patched with the policy's outputs), or the frozen copy (log_probs only)."""
    policy: Any = m.policy if isinstance(m, PolicyAndReference) else m
    ctx = policy.disable_adapter() if adapters_off else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        yield (policy, policy_outputs) if adapters_off else (m.ref, ("log_probs",))  # type: ignore[misc]


def dpo_loss(ref: nn.Module | None, adapters_off: bool, ipo: bool
             ) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """DPOTrainer._compute_loss (loss_type sigmoid, or ipo) with the reference `ref`, or the policy's base
    with adapters disabled, or precomputed log-probs (neither)."""

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        policy = m.policy if isinstance(m, PolicyAndReference) else m
        args = (inputs["input_ids"], inputs["rows"], inputs["cols"], inputs["mask"])
        outputs = fused_forward(policy, *args, POLICY_OUTPUTS)
        logps = outputs["log_probs"].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with _reference(m, adapters_off, POLICY_OUTPUTS) as (target, outs):
                ref_out = fused_forward(target, *args, outs)
                ref_logps = ref_out["log_probs"].sum(dim=1)
                del ref_out
            ref_chosen, ref_rejected = ref_logps.chunk(2, dim=0)
        delta = (chosen - ref_chosen) - (rejected - ref_rejected)
        if ipo:
            cm, rm = inputs["completion_mask"].chunk(2, dim=0)
            d = (chosen - ref_chosen) / cm.sum(dim=1).clamp(min=1.0) - (rejected - ref_rejected) / rm.sum(
                dim=1).clamp(min=1.0)
            loss = ((d - 1 / (2 * 0.1)) ** 2).mean()
        else:
            loss = -nn.functional.logsigmoid(0.1 * delta).mean()
        # metrics (dpo_trainer.py): entropy and mean logits over the completion tokens, detached
        mask = inputs["mask"]
        _ = (outputs["entropy"].detach() * mask).sum(), outputs["mean_logits"].detach().sum()
        del outputs
        return loss

    return loss_fn


KTO_OUTPUTS = ("log_probs", "entropy", "mean_logits")  # kto_trainer.py add_fused_lm_head outputs


def kto_loss(adapters_off: bool) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """KTOTrainer._compute_loss (loss_type kto): the policy's KL forward under no_grad, the policy's forward,
    then the reference's KL and completion forwards under no_grad (or precomputed reference log-probs)."""

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        policy = m.policy if isinstance(m, PolicyAndReference) else m
        args = (inputs["rows"], inputs["cols"], inputs["mask"])
        with torch.no_grad():
            kl_logps = fused_forward(policy, inputs["KL_input_ids"], *args, KTO_OUTPUTS)["log_probs"].sum(-1)
        outputs = fused_forward(policy, inputs["input_ids"], *args, KTO_OUTPUTS)
        logps = outputs["log_probs"].sum(-1)
        if "ref_logps" in inputs:
            ref_logps, ref_kl = inputs["ref_logps"], inputs["ref_KL_logps"]
        else:
            with _reference(m, adapters_off, KTO_OUTPUTS) as (target, outs):
                ref_kl = fused_forward(target, inputs["KL_input_ids"], *args, outs)["log_probs"].sum(-1)
                ref_logps = fused_forward(target, inputs["input_ids"], *args, outs)["log_probs"].sum(-1)
        kl = (kl_logps - ref_kl).mean().detach().clamp(min=0)
        loss = (1 - torch.sigmoid(0.1 * (logps - ref_logps - kl))).mean()
        del outputs
        return loss

    return loss_fn


def sft_trl_loss(prompt: int) -> tuple[Callable[[int, int, int], Callable[[], dict[str, Any]]],
                                       Callable[[nn.Module, dict[str, Any]], torch.Tensor]]:
    """SFTTrainer.compute_loss with the fused head (per-token loss = -log_probs, mean over the labels)."""

    def make_inputs(batch: int, seq: int, vocab: int) -> Callable[[], dict[str, Any]]:
        per_row = min(seq - prompt, seq - 1)

        def make() -> dict[str, Any]:
            n = batch * per_row
            return {"input_ids": torch.randint(0, vocab, (batch, seq), dtype=torch.long),
                    "mask": torch.ones((batch, seq - 1), dtype=torch.bool),
                    "rows": torch.randint(0, batch, (n,), dtype=torch.long),
                    "cols": torch.randint(0, seq - 1, (n,), dtype=torch.long)}
        return make

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        out = fused_forward(m, inputs["input_ids"], inputs["rows"], inputs["cols"], inputs["mask"], SFT_OUTPUTS)
        return out["loss"]

    return make_inputs, loss_fn


def reward_loss(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """RewardTrainer.compute_loss: one forward of the 2B stacked rows, -logsigmoid(chosen - rejected)."""
    logits = m(input_ids=inputs["input_ids"], use_cache=False).logits
    chosen, rejected = logits.squeeze(-1).chunk(2)
    loss = -nn.functional.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():  # the metrics
        _ = (chosen > rejected).float().mean(), (chosen - rejected).mean()
    return loss


class PolicyAndReference(nn.Module):
    """The trained model and DPOTrainer's frozen reference copy, so the step tracks both."""

    def __init__(self, policy: nn.Module, ref: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.ref = ref

    def get_base_model(self) -> nn.Module:  # the policy's, for gradient checkpointing and offload helpers
        p: Any = self.policy
        return p.get_base_model() if hasattr(p, "get_base_model") else p


# --- reference-free objectives: TRL ORPOTrainer and CPOTrainer (cpo, simpo) ---------------------------------
class _LogProbEntropy(torch.autograd.Function):
    """trl/kernels/logprob_entropy.py _LogProbEntropyFunction's CUDA allocations (the Triton kernels write into
    them and allocate nothing): four fp32 vectors per row in forward, the logits themselves saved (no copy);
    backward fills one `empty_like(logits)` gradient."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        logprobs = torch.empty(logits.shape[:-1], device=logits.device, dtype=torch.float32)
        entropy = torch.empty_like(logprobs)
        log_z = torch.empty_like(logprobs)
        expected_logit = torch.empty_like(logprobs)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, index, log_z, expected_logit)
        return logprobs, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[Any, ...]:
        logits, _index, _log_z, _expected = ctx.saved_tensors
        grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
        if grad_logprobs is not None:
            grad_logprobs = grad_logprobs.contiguous()
        if grad_entropy is not None:
            grad_entropy = grad_entropy.contiguous()
        return grad_logits, None


def _cuda_selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, temperature: float = 1.0,
                                row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """trl/trainer/utils.py selective_log_softmax on CUDA with Triton (`_supports_trl_loss_kernel`: a 3-D
    logits tensor with unit last stride, an index of its leading shape): the fused log-prob/entropy kernel."""
    logprobs, _ = _LogProbEntropy.apply(logits, index)  # type: ignore[no-untyped-call]
    return logprobs  # type: ignore[no-any-return]


def _stub_trainer(objective: str, chosen_nll: bool) -> Any:
    """An ORPOTrainer / CPOTrainer without __init__ (it needs a tokenizer and a dataset): only the attributes its
    concatenated_forward and loss read (orpo_config.py / cpo_config.py defaults)."""
    import warnings
    from types import SimpleNamespace

    with warnings.catch_warnings():  # TRLExperimentalWarning: the trainers live under trl.experimental in TRL 1.x
        warnings.simplefilter("ignore")
        from trl.experimental.cpo.cpo_trainer import CPOTrainer
        from trl.experimental.orpo.orpo_trainer import ORPOTrainer
    if objective == "orpo":
        tr: Any = object.__new__(ORPOTrainer)
        tr.padding_value = 0
    else:
        tr = object.__new__(CPOTrainer)
        tr.pad_token_id = 0
        tr.loss_type = "simpo" if objective == "simpo" else "sigmoid"
        tr.cpo_alpha = 1.0 if chosen_nll else 0.0
        tr.simpo_gamma, tr.label_smoothing, tr.alpha = 0.5, 0.0, 0.0
    tr.is_encoder_decoder = False
    tr.aux_loss_enabled = False
    tr.beta = 0.1
    tr.accelerator = SimpleNamespace(device=torch.device("cpu"))
    return tr


@contextlib.contextmanager
def _triton_log_softmax(objective: str) -> Iterator[None]:
    """The trainer module's `selective_log_softmax` as it runs on CUDA with Triton installed."""
    import importlib

    mod = importlib.import_module("trl.experimental.orpo.orpo_trainer" if objective == "orpo"
                                  else "trl.experimental.cpo.cpo_trainer")
    saved = getattr(mod, "selective_log_softmax")  # noqa: B009  (imported there from trl.trainer.utils)
    setattr(mod, "selective_log_softmax", _cuda_selective_log_softmax)  # noqa: B010
    try:
        yield
    finally:
        setattr(mod, "selective_log_softmax", saved)  # noqa: B010


def make_pair_inputs(batch: int, seq: int, prompt: int, vocab: int) -> Callable[[], dict[str, Any]]:
    """ORPO/CPO's collator output (DPODataCollatorWithPadding): chosen_* and rejected_* of [batch, seq], labels
    -100 over the prompt; concatenated_inputs stacks them to 2·batch rows."""

    def make() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("chosen", "rejected"):
            out[f"{kind}_input_ids"] = torch.randint(0, vocab, (batch, seq), dtype=torch.long)
            out[f"{kind}_attention_mask"] = torch.ones((batch, seq), dtype=torch.long)
            out[f"{kind}_labels"] = torch.randint(0, vocab, (batch, seq), dtype=torch.long)
        return out

    return make


def reference_free_loss(objective: str, chosen_nll: bool) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """ORPOTrainer / CPOTrainer get_batch_loss_metrics on the trainer's own concatenated_forward
    (trl/experimental/orpo/orpo_trainer.py, trl/experimental/cpo/cpo_trainer.py), metrics included.

    HF Trainer with bf16/fp16 (TRL's default) runs the model through accelerate's prepared forward:
    autocast around the model only, then `convert_outputs_to_fp32` (accelerate/utils/operations.py), so under
    autocast the logits come back as an fp32 copy and the log-softmax work runs outside autocast.
    """
    trainer = _stub_trainer(objective, chosen_nll)

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        amp = torch.is_autocast_enabled("cpu")
        amp_dtype = torch.get_autocast_dtype("cpu")

        def prepared_forward(*args: Any, **kwargs: Any) -> Any:  # accelerator.prepare_model's forward
            if not amp:
                return m(*args, **kwargs)
            with torch.autocast("cpu", dtype=amp_dtype):
                out = m(*args, **kwargs)
            out.logits = out.logits.float()
            return out

        with torch.autocast("cpu", enabled=False), _triton_log_softmax(objective):
            chosen_logps, rejected_logps, chosen_logits, rejected_logits, nll = trainer.concatenated_forward(
                prepared_forward, inputs)[:5]
            loss: torch.Tensor
            if objective == "orpo":
                losses, chosen_r, rejected_r, ratio, log_odds = trainer.odds_ratio_loss(chosen_logps, rejected_logps)
                loss = nll - losses.mean()
                _ = ratio.detach(), log_odds.detach()
            else:
                losses, chosen_r, rejected_r = trainer.cpo_loss(chosen_logps, rejected_logps)
                loss = losses.mean() + trainer.cpo_alpha * nll
            # get_batch_loss_metrics: rewards, accuracies, log-probs and the mean logits, all detached
            _ = ((chosen_r > rejected_r).float().mean(), (chosen_r - rejected_r).mean(),
                 chosen_logits.detach().mean(), rejected_logits.detach().mean())
            del chosen_logits, rejected_logits
        return loss

    return loss_fn


# --- torchtune's DPO recipes (recipes/lora_dpo_single_device.py, full_dpo_distributed.py): the full fp32 logits ----
def make_torchtune_dpo_inputs(batch: int, seq: int, vocab: int) -> Callable[[], dict[str, Any]]:
    """torchtune's padded_collate_dpo batch: (concatenated_input_ids, concatenated_labels), each [2·batch, seq]
    int64 (chosen rows then rejected rows, padded to the longest)."""

    def make() -> dict[str, Any]:
        return {"input_ids": torch.randint(0, vocab, (2 * batch, seq), dtype=torch.long),
                "labels": torch.randint(0, vocab, (2 * batch, seq), dtype=torch.long)}

    return make


def _torchtune_batch_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """torchtune/rlhf/sequence_processing.py get_batch_log_probs (return_average_logprobs False): the shifted labels
    cloned, log_softmax(logits / temperature) over the vocabulary (logits_to_logprobs, temperature 1.0: the division
    still makes a copy), gather, then the masked sum per row."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100  # CROSS_ENTROPY_IGNORE_IDX
    labels[labels == -100] = 0
    per_token = torch.gather(nn.functional.log_softmax(logits / 1.0, dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)
    return (per_token * loss_mask).sum(-1)


def _torchtune_forward(m: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's concatenated_forward: `all_logits = model(input_ids)`, which torchtune's TransformerDecoder
    returns in fp32 (torchtune/modules/transformer.py unembed: `self.output(h).float()`), then the log-probs."""
    logits = m(input_ids=input_ids, use_cache=False).logits.float()
    return logits, _torchtune_batch_log_probs(logits, labels)


def torchtune_dpo_loss(adapters_off: bool) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """The recipes' train() step with DPOLoss (torchtune/rlhf/loss/dpo.py, beta 0.1, label_smoothing 0): the policy's
    concatenated_forward, its logits' means for the metrics and then `del` of the logits; the reference's
    concatenated_forward under no_grad (`disable_adapter(self._model)` in the LoRA recipe, the separate frozen
    `self._ref_model` in the full one), its logits dropped on return; the loss on the per-row log-probs."""

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        policy: Any = m.policy if isinstance(m, PolicyAndReference) else m
        ids, labels = inputs["input_ids"], inputs["labels"]
        logits, logps = _torchtune_forward(policy, ids, labels)
        half = ids.shape[0] // 2
        chosen, rejected = logps[:half], logps[half:]
        _ = logits[:half].detach().mean(), logits[half:].detach().mean()
        del logits
        ctx = policy.disable_adapter() if adapters_off else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            _ref_logits, ref_logps = _torchtune_forward(policy if adapters_off else m.ref, ids, labels)  # type: ignore[union-attr]
            del _ref_logits
        ref_chosen, ref_rejected = ref_logps[:half], ref_logps[half:]
        logits_diff = (chosen - rejected) - (ref_chosen - ref_rejected)
        losses = -nn.functional.logsigmoid(0.1 * logits_diff)
        _ = (0.1 * (chosen - ref_chosen).detach() > 0.1 * (rejected - ref_rejected).detach()).float()
        return losses.mean()

    return loss_fn
