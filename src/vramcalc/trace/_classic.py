"""The classics on fake tensors (issue 15): a ResNet with torchvision's module structure and the word-level LSTM
language model of pytorch/examples, built here in plain PyTorch (torchvision's wheel does not install beside this
torch), then traced through trace_module_step like every other model.

The ResNet follows torchvision/models/resnet.py module for module (conv1/bn1/relu/maxpool, layer1..4 of BasicBlock
or Bottleneck with a conv1x1 + BatchNorm2d downsample, avgpool, fc), so its parameters, buffers and autograd graph
are torchvision's; tests/test_classics.py checks its sum(p.numel()) against the core's count. The LSTM model is
word_language_model/model.py RNNModel. nn.LSTM's CPU path (per-step cells) is not what a GPU runs: cuDNN's fused
_cudnn_rnn is emulated by `_CudnnLSTM` with what that op keeps (RNN.cpp, derivatives.yaml `_cudnn_rnn`: input, hx,
cx, output and the reserve space; the flat weights are the module's own) and what its backward allocates (dx,
dhx, dcx and one flat weight gradient, each parameter's gradient a view of it). The reserve's size is the core's
approximation (memory/rnn.py reserve_bytes): the trace checks everything around it, not the reserve itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from vramcalc.core.memory import classic as _classic
from vramcalc.core.memory.rnn import reserve_bytes
from vramcalc.core.params import PLANES, STRIDES, conv_groups, conv_width_per_group, expansion
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace import _cuda
from vramcalc.trace._optim import make_optimizer
from vramcalc.trace._step import TraceResult, trace_module_step


# --- ResNet (torchvision/models/resnet.py structure) ----------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, groups: int,
                 base_width: int) -> None:
        super().__init__()
        width = planes * base_width // 64 * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class ResNet(nn.Module):
    def __init__(self, m: ModelSpec, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        e = expansion(m)
        inplanes = 64
        for stage, (planes, n_blocks, stride) in enumerate(zip(PLANES, m.conv_blocks, STRIDES, strict=True), 1):
            layers: list[nn.Module] = []
            for i in range(n_blocks):
                s = stride if i == 0 else 1
                down = None
                if s != 1 or inplanes != planes * e:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes * e, 1, s, bias=False), nn.BatchNorm2d(planes * e))
                if m.conv_bottleneck:
                    layers.append(Bottleneck(inplanes, planes, s, down, conv_groups(m), conv_width_per_group(m)))
                else:
                    layers.append(BasicBlock(inplanes, planes, s, down))
                inplanes = planes * e
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * e, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # type: ignore[no-any-return]


# --- LSTM language model (pytorch/examples word_language_model/model.py RNNModel) -------------------------------
class _CudnnLSTM(torch.autograd.Function):
    """What aten::_cudnn_rnn allocates and keeps in training, on fake tensors (module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor, hidden: int, reserve: int,
                *weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = x.new_empty((x.shape[0], x.shape[1], hidden))
        hy, cy = torch.empty_like(hx), torch.empty_like(cx)
        space = x.new_empty((reserve,), dtype=torch.uint8)
        ctx.save_for_backward(x, hx, cx, out, space, *weights)
        return out, hy, cy

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, *_: Any) -> Any:
        x, hx, cx, _out, _space, *weights = ctx.saved_tensors
        dx, dhx, dcx = torch.empty_like(x), torch.empty_like(hx), torch.empty_like(cx)
        flat = x.new_empty((sum(w.numel() for w in weights),))  # RNN.cpp: dw = zeros(weight_buf), one buffer
        grads, at = [], 0
        for w in weights:
            grads.append(flat[at:at + w.numel()].view_as(w))
            at += w.numel()
        return (dx, dhx, dcx, None, None, *grads)


class RNNModel(nn.Module):
    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        assert m.vocab_size is not None and m.hidden_size is not None and m.num_layers is not None
        self.spec = m
        self.drop = nn.Dropout(m.dropout)
        self.encoder = nn.Embedding(m.vocab_size, m.rnn_input_size)
        self.rnn = nn.LSTM(m.rnn_input_size, m.hidden_size, m.num_layers, dropout=m.dropout)
        self.decoder = nn.Linear(m.hidden_size, m.vocab_size)
        if m.tie_word_embeddings:
            self.decoder.weight = self.encoder.weight

    def forward(self, ids: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        m = self.spec
        emb = self.drop(self.encoder(ids))
        weights = [getattr(self.rnn, n) for n in self.rnn._flat_weights_names]
        reserve = reserve_bytes(m, ids.numel(), ids.shape[1], 4)
        out, _, _ = _CudnnLSTM.apply(emb, hx, cx, m.hidden_size, reserve, *weights)
        decoded = self.decoder(self.drop(out))
        return F.log_softmax(decoded.view(-1, m.vocab_size), dim=1)


def build(model: ModelSpec, training: TrainingSpec) -> nn.Module:
    """The classic model on the meta device (no storage until trace_module_step fakeifies it)."""
    with torch.device("meta"):
        return ResNet(model, training.num_classes) if model.family == "resnet" else RNNModel(model)


def trace_classic(model: ModelSpec, training: TrainingSpec) -> TraceResult:
    """One steady-state training step of a ResNet or an LSTM language model on fake tensors."""
    _classic.check(model, training)
    precision = "fp32" if training.precision == "auto" else training.precision
    training = replace(training, precision=precision)
    notes: list[str] = [f"{model.family}: plain-PyTorch model in trace/_classic.py"]
    autocast = None
    if precision.startswith("amp-"):
        dtype = torch.bfloat16 if precision == "amp-bf16" else torch.float16
        autocast = lambda: _cuda.cuda_autocast(dtype)  # noqa: E731
        notes.append(f"{precision}: fp32 weights, forward under autocast with CUDA's op lists")
    b = training.batch_size
    if model.family == "resnet":
        size, classes = training.image_size, training.num_classes

        def make_inputs() -> Any:
            return {"x": torch.randn(b, 3, size, size), "y": torch.randint(0, classes, (b,))}

        def loss_fn(m: nn.Module, inputs: Any) -> torch.Tensor:
            return F.cross_entropy(m(inputs["x"]), inputs["y"])
    else:
        assert model.vocab_size is not None and model.num_layers is not None and model.hidden_size is not None
        t, v, shape = training.seq_len, model.vocab_size, (model.num_layers, b, model.hidden_size)

        def make_inputs() -> Any:  # seq-first batches (word_language_model batchify / get_batch), init_hidden zeros
            return {"ids": torch.randint(0, v, (t, b)), "targets": torch.randint(0, v, (t * b,)),
                    "hx": torch.zeros(shape), "cx": torch.zeros(shape)}

        def loss_fn(m: nn.Module, inputs: Any) -> torch.Tensor:
            return F.nll_loss(m(inputs["ids"], inputs["hx"], inputs["cx"]), inputs["targets"])

        notes.append("cuDNN LSTM emulated (trace/_classic.py _CudnnLSTM): reserve space sized by the core's "
                     "approximation")

    def optimizer_factory(m: nn.Module) -> torch.optim.Optimizer:
        opt, opt_notes = make_optimizer(training, [p for p in m.parameters() if p.requires_grad], m)
        notes.extend(opt_notes)
        return opt

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with _cuda.cuda_emulation() as cuda_notes:
        module = build(model, training)
        result = trace_module_step(module, make_inputs, loss_fn, optimizer_factory, grad_accum=training.grad_accum,
                                   autocast=autocast, fake_mode=fake_mode, notes=notes)
    return replace(result, notes=result.notes + tuple(cuda_notes))
