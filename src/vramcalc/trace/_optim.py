"""Optimizers for the traced step: torch's own where they exist, small documented emulations otherwise."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.optimizer import LIBRARY_OPTIMIZERS, projection_rank, torchao_step_bytes
from vramcalc.core.memory.precision import resolve_precision
from vramcalc.core.specs import TrainingSpec


class Fp32StateAdamW(torch.optim.Optimizer):
    """AdamW over 16-bit parameters with fp32 moments and no master weights ("bf16" seed accounting).

    `impl` follows --optimizer-impl: "for-loop" computes per parameter (the fp32 gradient copy, the
    denominator and the fp32 update are temporaries of one parameter's size); "foreach" also holds
    sqrt(exp_avg_sq) of every parameter at once, as torch's _multi_tensor_adamw does; "fused" is a
    fused CUDA kernel that updates states and weights in place (no temporaries), so only the states
    are allocated here.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, impl: str = "for-loop") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.impl = impl

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if self.impl != "for-loop":
            states = []
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and not self.state[p]:
                        self.state[p]["step"] = 0
                        self.state[p]["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                        self.state[p]["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    if p.grad is not None:
                        states.append(self.state[p]["exp_avg_sq"])
            if self.impl == "foreach" and states:
                sqrt = torch._foreach_sqrt(states)  # the group-sized temporary of _multi_tensor_adamw
                del sqrt
            return
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                g = p.grad.float()
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                del g
                denom = (st["exp_avg_sq"].sqrt() / math.sqrt(1 - b2 ** st["step"])).add_(group["eps"])
                update = st["exp_avg"] / denom
                del denom
                p.add_(update.to(p.dtype), alpha=-group["lr"] / (1 - b1 ** st["step"]))


class MasterWeightOptimizer(torch.optim.Optimizer):
    """Mixed precision: 16-bit model weights and grads, fp32 master weights stepped by a torch optimizer.

    As Apex O2 / DeepSpeed bf16 do: before the step each 16-bit grad is cast to an fp32 grad on its
    master copy (a temporary, freed after the step), the inner optimizer updates the masters, and
    the masters are copied back into the 16-bit weights. Master weights count as optimizer_state.
    """

    def __init__(self, params: Iterable[nn.Parameter], make_inner: Any, free_model_grads: bool = False) -> None:
        # free_model_grads: BAdam's _grad_to_hp (badam block_optim.py) frees each 16-bit grad once its fp32 copy exists
        self.free_model_grads = free_model_grads
        self.model_params = [p for p in params if p.requires_grad]
        self.masters = [p.detach().float().requires_grad_(True) for p in self.model_params]
        self.inner: torch.optim.Optimizer = make_inner(self.masters)
        self.param_groups = self.inner.param_groups
        self.defaults = self.inner.defaults

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.inner.state

    def extra_state_tensors(self) -> Iterator[torch.Tensor]:
        yield from self.masters
        inner = getattr(self.inner, "extra_state_tensors", None)
        if inner is not None:
            yield from inner()

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for p, m in zip(self.model_params, self.masters, strict=True):
            m.grad = None if p.grad is None else p.grad.float()
            if self.free_model_grads:
                p.grad = None
        self.inner.step()
        for p, m in zip(self.model_params, self.masters, strict=True):
            m.grad = None
            p.copy_(m)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            p.grad = None


class Adam8bitEmulation(torch.optim.Optimizer):
    """bitsandbytes AdamW8bit storage: uint8 state1/state2 with an fp32 absmax per 256-element block.

    bitsandbytes/optim/optimizer.py Optimizer8bit.init_state: tensors with fewer than
    `min_8bit_size` = 4096 elements keep 32-bit states; the dynamic quantization maps (256 fp32
    each) are shared. The blockwise 8-bit kernel updates in place, so the step has no temporaries.
    """

    MIN_8BIT_SIZE = 4096
    BLOCK = 256

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-4) -> None:
        super().__init__(params, {"lr": lr})
        self.qmaps: list[torch.Tensor] = []

    def extra_state_tensors(self) -> Iterator[torch.Tensor]:
        yield from self.qmaps

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if st:
                    continue
                if not self.qmaps:
                    self.qmaps = [torch.empty(256, dtype=torch.float32, device=p.device) for _ in range(2)]
                st["step"] = 0  # a Python int in bitsandbytes
                bnb_states(st, p)


def bnb_states(st: dict[str, Any], p: torch.Tensor) -> None:
    """bitsandbytes Optimizer2State.init_state's two AdamW states of `p` (8-bit block-wise, or fp32 when small)."""
    if p.numel() < Adam8bitEmulation.MIN_8BIT_SIZE:
        st["state1"] = torch.zeros_like(p, dtype=torch.float32)
        st["state2"] = torch.zeros_like(p, dtype=torch.float32)
    else:
        blocks = math.ceil(p.numel() / Adam8bitEmulation.BLOCK)
        st["state1"] = torch.zeros_like(p, dtype=torch.uint8)
        st["state2"] = torch.zeros_like(p, dtype=torch.uint8)
        st["absmax1"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
        st["absmax2"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)


class Fused32bitEmulation(torch.optim.Optimizer):
    """bitsandbytes paged 32-bit AdamW: two fp32 states per parameter, fused in-place kernel."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-4) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not self.state[p]:
                    self.state[p]["step"] = 0
                    self.state[p]["state1"] = torch.zeros_like(p, dtype=torch.float32)
                    self.state[p]["state2"] = torch.zeros_like(p, dtype=torch.float32)


class TorchaoAdamEmulation(torch.optim.Optimizer):
    """torchao.optim AdamW8bit / AdamW4bit / AdamWFp8 state storage (torchao/optim/adam.py _new_buffer).

    Quantized (numel >= 4096 and a multiple of the block): OptimState8bit.zeros / OptimState4bit.zeros /
    OptimStateFp8.zeros allocate codes, an fp32 scale per block and (8/4-bit) an fp32 quantization map
    per state; otherwise zeros_like(p). The compiled step itself (single_param_adam) cannot run here: each quantized
    parameter's step allocates what the CPU measurement of it kept in flight (core/memory/optimizer.py
    torchao_step_bytes, benchmarks/torchao_step.py) and frees it, one parameter at a time.
    """

    SPEC = {"torchao-adamw-8bit": (torch.uint8, 1, 256, 256), "torchao-adamw-4bit": (torch.uint8, 2, 128, 16),
            "torchao-adamw-fp8": (torch.float8_e4m3fn, 1, 256, 0)}

    def __init__(self, params: Iterable[nn.Parameter], name: str, lr: float = 1e-4) -> None:
        super().__init__(params, {"lr": lr})
        self.spec = self.SPEC[name]
        self.name = name

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        dtype, per_byte, block, qmap = self.spec
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.state[p]:
                    step_bytes = torchao_step_bytes(self.name, p.numel())
                    if step_bytes:  # allocated and freed: the step's in-flight buffers
                        in_flight = torch.empty(step_bytes, dtype=torch.uint8, device=p.device)
                        del in_flight
                    continue
                st = self.state[p]
                st["step"] = torch.tensor(0.0)  # a host tensor in torchao, as torch's
                n = p.numel()
                for key in ("exp_avg", "exp_avg_sq"):
                    if n >= 4096 and n % block == 0:
                        st[key + ".codes"] = torch.zeros(n // per_byte, dtype=dtype, device=p.device)
                        st[key + ".scale"] = torch.zeros(n // block, dtype=torch.float32, device=p.device)
                        if qmap:
                            st[key + ".qmap"] = torch.zeros(qmap, dtype=torch.float32, device=p.device)
                    else:
                        st[key] = torch.zeros_like(p)


def _impl_kwargs(impl: str) -> dict[str, Any]:
    # On CUDA, torch picks foreach by default (optim/optimizer.py _default_to_fused_or_foreach);
    # on a CPU device it would pick the for-loop, so the choice is always passed explicitly.
    return {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}


def make_optimizer(training: TrainingSpec, params: list[nn.Parameter],
                   model: nn.Module | None = None) -> tuple[torch.optim.Optimizer, list[str]]:
    """The optimizer for `training`, over the trainable `params`; returns notes on emulations.

    `model` (the traced module) gives GaLore/APOLLO their target Linears and Adam-mini its parameter names.
    """
    notes: list[str] = []
    name, impl, precision = training.optimizer, training.optimizer_impl, resolve_precision(training)
    lr = 1e-4
    names = _param_names(model, params)

    def torch_opt(ps: list[Any]) -> torch.optim.Optimizer:
        if name in LIBRARY_OPTIMIZERS:
            return library_optimizer(training, ps, params, names, model, notes)
        kw = _impl_kwargs(impl)
        if name == "adamw":
            return torch.optim.AdamW(ps, lr=lr, **kw)
        if name == "sgd":
            return torch.optim.SGD(ps, lr=lr, **kw)
        if name == "sgd-momentum":
            return torch.optim.SGD(ps, lr=lr, momentum=0.9, **kw)
        if name in ("adafactor", "adafactor-momentum"):
            from transformers.optimization import Adafactor

            # HF Trainer's adafactor: scale_parameter=False, relative_step=False (trainer.py); beta1 from optim_args.
            beta1 = 0.9 if name == "adafactor-momentum" else None
            return Adafactor(ps, lr=lr, scale_parameter=False, relative_step=False, beta1=beta1)
        if name == "lion":
            raise UnsupportedCombination("vramcalc trace has no lion optimizer yet; use adamw or sgd")
        raise UnsupportedCombination(f"unknown optimizer {name!r}")

    if name.startswith("torchao-"):
        notes.append(f"{name}: torchao low-bit state storage emulated (codes + fp32 block scales + quantization "
                     "maps; parameter-dtype states for small tensors); the compiled step is not run, its measured "
                     "in-flight bytes are allocated per parameter (benchmarks/torchao_step.py)")
        return TorchaoAdamEmulation(params, name), notes
    if name in ("adamw-8bit", "paged-adamw-8bit"):
        notes.append("adamw-8bit: bitsandbytes storage emulated (uint8 states + fp32 absmax per 256; "
                     "32-bit states under 4096 elements; in-place kernel, no step temporaries)")
        if name.startswith("paged"):
            notes.append("paged optimizer: states counted as resident in GPU memory (managed memory may be evicted)")
        return Adam8bitEmulation(params, lr=lr), notes
    if name == "paged-adamw":
        notes.append("paged-adamw: bitsandbytes 32-bit fused states emulated; counted as resident in GPU memory")
        return Fused32bitEmulation(params, lr=lr), notes
    if name in ("adafactor", "adafactor-momentum") and impl != "for-loop":
        notes.append("adafactor: transformers.optimization.Adafactor (no foreach/fused implementation)")
    if precision in ("mixed-bf16", "mixed-fp16") and getattr(training, "badam", False):
        notes.append("BAdam: the active block's fp32 copies stepped by torch AdamW; each 16-bit grad freed as its fp32 "
                     "copy is made (badam block_optim.py step_single_gpu)")
        return MasterWeightOptimizer(params, torch_opt, free_model_grads=True), notes
    if precision in ("mixed-bf16", "mixed-fp16"):
        notes.append("mixed precision: fp32 master weights (counted as optimizer_state) stepped by the "
                     "torch optimizer; fp32 copies of the grads are temporaries during the step")
        return MasterWeightOptimizer(params, torch_opt), notes
    if precision in ("bf16", "fp16") and name == "adamw":
        notes.append(f"{precision}: 16-bit weights and grads with fp32 AdamW moments, emulated with the "
                     f"{impl} implementation's temporaries")
        return Fp32StateAdamW(params, lr=lr, impl=impl), notes
    if precision in ("bf16", "fp16") and name not in LIBRARY_OPTIMIZERS:
        notes.append(f"{precision} with {name}: torch keeps the optimizer state in the parameter dtype")
    return torch_opt(params), notes


class InBackward:
    """torchtune's optimizer_in_bwd: one optimizer per parameter, stepped and zeroed as its gradient lands.

    torchtune training/memory.py register_optim_in_bwd_hooks registers `optim_dict[p].step();
    optim_dict[p].zero_grad()` as each parameter's post-accumulate-grad hook, and the recipe's own step is a
    no-op. The hooks are registered at the first `step()` (which steps every parameter once, creating the
    states), so that they run after the tracer's own hook that labels the new gradient.
    """

    def __init__(self, per_param: dict[nn.Parameter, torch.optim.Optimizer]) -> None:
        self.per_param = per_param
        self.param_groups = [g for opt in per_param.values() for g in opt.param_groups]
        self.hooked = False

    @property
    def state(self) -> dict[Any, Any]:
        return {p: s for opt in self.per_param.values() for p, s in opt.state.items()}

    def step(self) -> None:
        if self.hooked:
            return  # every parameter was stepped in backward
        for opt in self.per_param.values():
            opt.step()
        for p, opt in self.per_param.items():
            def hook(_: nn.Parameter, opt: torch.optim.Optimizer = opt) -> None:
                opt.step()
                opt.zero_grad(set_to_none=True)

            p.register_post_accumulate_grad_hook(hook)  # type: ignore[no-untyped-call]
        self.hooked = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.per_param.values():
            opt.zero_grad(set_to_none=set_to_none)


# ---- issue 13: GaLore, APOLLO and Adam-mini, the libraries' own optimizers ----------------------------------------

def _param_names(model: nn.Module | None, params: list[nn.Parameter]) -> list[str]:
    """The qualified name of each of `params` in `model` (named_parameters order; "" when unknown)."""
    if model is None:
        return [""] * len(params)
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id.get(id(p), "") for p in params]


def _target_ids(model: nn.Module, targets: str) -> set[int]:
    """HF _setup_low_rank_optimizer's target weights: the `module_name + ".weight"` of nn.Linear modules, looked up in
    named_parameters() (so a tied LM head, listed there as the embedding, is never projected). attn-mlp is every
    Linear of the blocks (GaLore's and APOLLO's own ["attn", "mlp"], whatever the family calls its attention),
    all-linear also the LM head (transformers trainer_optimizer.py `all_linear`)."""
    names: set[str] = set()
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        head = mod_name.split(".")[-1] in ("lm_head", "embed_out", "score")
        attention = any(k in mod_name for k in ("attn", "attention"))
        if head:
            chosen = targets == "all-linear"
        elif targets in ("attn-mlp", "all-linear"):
            chosen = True
        else:
            chosen = (targets == "attn") == attention
        if chosen:
            names.add(mod_name + ".weight")
    return {id(p) for n, p in model.named_parameters() if n in names and p.requires_grad}


def _groups(rest: list[Any], proj: list[Any], group: dict[str, Any]) -> list[dict[str, Any]]:
    """HF's two param groups (non-target first), leaving out an empty one (one parameter in backward)."""
    return [g for g in ({"params": rest}, {"params": proj, **group}) if g["params"]]


class _ProjectorStates:
    """extra_state_tensors for GaLore/APOLLO: the projection matrix lives in a projector object in the state."""

    state: Any

    def extra_state_tensors(self) -> Iterator[torch.Tensor]:
        for st in self.state.values():
            proj = st.get("projector") if isinstance(st, dict) else None
            matrix = getattr(proj, "ortho_matrix", None)
            if isinstance(matrix, torch.Tensor):
                yield matrix
            elif isinstance(matrix, list):
                yield from (m for m in matrix if isinstance(m, torch.Tensor))


def _galore_8bit() -> Any:
    """galore_torch.GaLoreAdamW8bit with bitsandbytes' CUDA parts emulated: Optimizer2State.init_state's storage
    (the rule of Adam8bitEmulation: uint8 states + an fp32 absmax per 256, fp32 states under 4096 elements) and an
    in-place update_step (the blockwise kernel allocates nothing); GaLore's own step() runs unchanged."""
    try:
        from galore_torch import GaLoreAdamW8bit  # type: ignore[import-untyped]
    except ImportError:
        raise UnsupportedCombination("galore-adamw-8bit: pip install galore-torch==1.0 bitsandbytes to trace "
                                     "it") from None

    class TracedGaLoreAdamW8bit(_ProjectorStates, GaLoreAdamW8bit):  # type: ignore[misc]
        qmaps: list[torch.Tensor]

        def fill_qmap(self) -> None:  # the two shared 256-entry maps are made on the device in init_state
            self.qmaps = []

        def extra_state_tensors(self) -> Iterator[torch.Tensor]:
            yield from super().extra_state_tensors()
            yield from self.qmaps

        def init_state(self, group: Any, p: torch.Tensor, gindex: int, pindex: int) -> None:
            st = self.state[p]
            st["step"] = 0
            if not self.qmaps:
                self.qmaps = [torch.empty(256, dtype=torch.float32, device=p.device) for _ in range(2)]
            bnb_states(st, p)

        def update_step(self, group: Any, p: torch.Tensor, gindex: int, pindex: int) -> None:
            self.state[p]["step"] += 1  # bitsandbytes' kernel updates p, state1/2 and absmax1/2 in place

        def step(self, closure: Any = None) -> Any:
            sync = torch.cuda.synchronize  # GaLore's step synchronizes after each tensor: nothing to wait for here
            torch.cuda.synchronize = lambda *a, **k: None
            try:
                return super().step(closure)
            finally:
                torch.cuda.synchronize = sync

    return TracedGaLoreAdamW8bit


def _llamafactory_muon(params: list[Any], names: list[str], notes: list[str]) -> torch.optim.Optimizer:
    """LLaMA-Factory's use_muon: its own third_party Muon, with the split of train/trainer_utils.py
    _create_muon_optimizer (2-D, no "embed" and no "lm_head" in the name: Muon; the rest: its AdamW branch) and its
    defaults (momentum 0.95, nesterov, 5 Newton-Schulz steps). Only the module is imported (llamafactory's package
    __init__ reads its version and nothing else), so the wheel installed without its dependencies will do."""
    try:
        from llamafactory.third_party.muon import Muon  # type: ignore[import-not-found]
    except ImportError:
        raise UnsupportedCombination("muon: pip install llamafactory==0.9.5 --no-deps to trace it (its "
                                     "third_party/muon/muon.py is run)") from None
    muon_params = [p for p, n in zip(params, names, strict=True)
                   if p.ndim == 2 and "embed" not in n and "lm_head" not in n]
    chosen = {id(p) for p in muon_params}
    adamw_params = [p for p in params if id(p) not in chosen]
    notes.append(f"muon: llamafactory 0.9.5 third_party/muon/muon.py Muon, {len(muon_params)} Muon tensors and "
                 f"{len(adamw_params)} AdamW tensors (trainer_utils.py _create_muon_optimizer's split)")
    return Muon(lr=1e-4, wd=0.0, muon_params=muon_params, adamw_params=adamw_params)  # type: ignore[no-any-return]


def library_optimizer(training: TrainingSpec, params: list[Any], model_params: list[nn.Parameter], names: list[str],
                      model: nn.Module | None, notes: list[str]) -> torch.optim.Optimizer:
    """galore_torch.GaLoreAdamW, apollo_torch.APOLLOAdamW or adam_mini.Adam_mini as HF Trainer / their READMEs
    build them. update_proj_gap is 1, so that every traced step is a projection update (the step that sets the
    peak: step 0 and every update_proj_gap steps). `params` are what is stepped (the model's trainable
    `model_params`, or their fp32 masters in the same order)."""
    name = training.optimizer
    if name == "muon":
        return _llamafactory_muon(params, names, notes)
    if name == "adam-mini":
        try:
            import adam_mini.adam_mini as am  # type: ignore[import-untyped]
        except ImportError:
            raise UnsupportedCombination("adam-mini: pip install adam-mini==1.1.1 to trace it") from None
        am.device = "cpu"  # the fake tensors' device (a module global chosen at import: 'cuda' if available)
        config = getattr(model, "config", None)
        dim = getattr(config, "hidden_size", 2048)
        heads = getattr(config, "num_attention_heads", 32)
        kv = getattr(config, "num_key_value_heads", None) or heads
        opt = am.Adam_mini(list(zip(names, params, strict=True)), lr=1e-4, dim=dim, n_heads=heads, n_kv_heads=kv,
                           verbose=False)
        opt.world_size = 1  # one process: torch.cuda.device_count() would be 0 on the tracing machine
        notes.append("adam-mini: adam_mini.Adam_mini 1.1.1 (LLaMA-Factory's arguments: dim, n_heads, n_kv_heads "
                     "from the config)")
        return opt  # type: ignore[no-any-return]
    if model is None:
        raise UnsupportedCombination(f"{name}: the tracer needs the model to find GaLore/APOLLO's target Linears")
    targets = _target_ids(model, training.optimizer_targets)
    rank = projection_rank(training)
    chosen = [id(q) in targets for q in model_params]
    proj = [p for p, c in zip(params, chosen, strict=True) if c]
    rest = [p for p, c in zip(params, chosen, strict=True) if not c]
    if not proj and not rest:
        raise UnsupportedCombination(f"{name}: nothing to optimize")
    if name == "galore-adamw":
        try:
            from galore_torch import GaLoreAdamW
        except ImportError:
            raise UnsupportedCombination("galore-adamw: pip install galore-torch==1.0 to trace it") from None
        group = {"rank": rank, "update_proj_gap": 1, "scale": 0.25, "proj_type": "std"}  # HF's defaults but the gap
        cls: Any = type("TracedGaLoreAdamW", (_ProjectorStates, GaLoreAdamW), {})
        opt = cls(_groups(rest, proj, group), lr=1e-4, no_deprecation_warning=True)
        notes.append(f"galore-adamw: galore_torch.GaLoreAdamW 1.0, rank {rank}, {len(proj)} projected weights; "
                     "update_proj_gap 1 (each traced step is an SVD step)")
        return opt  # type: ignore[no-any-return]
    if name == "galore-adamw-8bit":
        group = {"rank": rank, "update_proj_gap": 1, "scale": 0.25, "proj_type": "std"}
        opt = _galore_8bit()(_groups(rest, proj, group), lr=1e-4)
        notes.append(f"galore-adamw-8bit: galore_torch.GaLoreAdamW8bit 1.0's step (projection, saved_data clone, "
                     f"project_back) run as is, rank {rank}, {len(proj)} projected weights, update_proj_gap 1; "
                     "bitsandbytes' 8-bit state storage emulated (its CUDA kernel updates in place)")
        return opt  # type: ignore[no-any-return]
    try:
        import apollo_torch.apollo as apollo_module  # type: ignore[import-untyped]
        from apollo_torch import APOLLOAdamW
    except ImportError:
        raise UnsupportedCombination(f"{name}: pip install apollo-torch==1.0.3 to trace it") from None
    # The norm-growth limiter's `max(norm_ratio, 1.01)` compares a 0-dim tensor with a float in Python, which a
    # fake tensor cannot answer: the same value as a 0-dim tensor (torch.clamp), a scalar allocation as on CUDA.
    # next_seed draws the next seed with torch.randint on the host (`.tolist()`): no device memory, and data a
    # fake tensor has not; any new seed will do.
    import apollo_torch.random_projector as random_projector  # type: ignore[import-untyped]

    random_projector.next_seed = lambda seed, adv=0xF: seed + adv
    apollo_module.max = lambda x, floor: torch.clamp(x, min=floor) if isinstance(x, torch.Tensor) else max(x, floor)
    mini = name == "apollo-mini"
    # HF _get_apollo_optimizer defaults (proj random, scale_type channel, scale 1.0); APOLLO-Mini as HF's docs and
    # APOLLO's README give it: rank 1, scale_type tensor, scale 128.
    group = {"rank": rank, "proj": "random", "scale_type": "tensor" if mini else "channel", "update_proj_gap": 1,
             "scale": 128.0 if mini else 1.0, "proj_type": "std"}
    cls = type("TracedAPOLLOAdamW", (_ProjectorStates, APOLLOAdamW), {})
    opt = cls(_groups(rest, proj, group), lr=1e-4)
    notes.append(f"{name}: apollo_torch.APOLLOAdamW 1.0.3, rank {rank}, {len(proj)} projected weights; "
                 "update_proj_gap 1 (each traced step draws a new projection)")
    return opt  # type: ignore[no-any-return]
