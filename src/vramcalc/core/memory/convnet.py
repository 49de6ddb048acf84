"""torchvision's ResNet family: parameter tensors and, per unit (stem, each residual block, head), what autograd
saves in a training step, in bytes.

Source: pytorch/vision torchvision/models/resnet.py. ResNet.__init__: conv1 (7x7, stride 2, padding 3, no bias),
bn1, ReLU(inplace=True), maxpool (3x3, stride 2, padding 1), layer1..layer4 of planes 64/128/256/512 (strides
1, 2, 2, 2), AdaptiveAvgPool2d(1), fc Linear(512 x expansion, num_classes). Bottleneck (expansion 4, torchvision's
"ResNet V1.5": the stride on the 3x3 conv): conv1x1(inplanes, width), conv3x3(width, width, stride, groups),
conv1x1(width, planes x 4), a BatchNorm2d after each, `out += identity` then relu; width = planes x
(width_per_group / 64) x groups. BasicBlock (expansion 1): two conv3x3 and two BatchNorm2d. A block whose stride is
not 1 or whose input width differs from its output's has a downsample: conv1x1(inplanes, planes x expansion,
stride) + BatchNorm2d. Convs have no bias; BatchNorm2d has weight and bias, and the buffers running_mean,
running_var (fp32) and num_batches_tracked (int64).

What each op saves (torch tools/autograd/derivatives.yaml): convolution saves its input and weight (the weight's
16-bit autocast copy under AMP); batch norm (cudnn_batch_norm / native_batch_norm) saves its input and the fp32
per-channel save_mean and save_invstd; ReLU(inplace=True) saves its result (threshold_backward(grad, result)),
which is the BatchNorm output it overwrote; max_pool2d_with_indices saves its input and the int64 indices; the
residual add and adaptive_avg_pool2d save nothing new (the pool reads its input's shape and the input is already
saved); fc (addmm) saves its input; cross_entropy saves log_softmax's fp32 output. Under torch.autocast the convs
and fc run in 16 bits (autocast_mode.cpp lower_precision_fp list) and batch norm, in no list, runs on the 16-bit
input with its fp32 weight and statistics, returning 16 bits. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.params import ParamTensor

if TYPE_CHECKING:
    from vramcalc.core.memory.classic import Unit
    from vramcalc.core.specs import ModelSpec

BLOCK = 512  # the CUDA caching allocator rounds every allocation up to 512 bytes (c10/cuda/CUDACachingAllocator.cpp)
PLANES = (64, 128, 256, 512)  # ResNet.__init__: layer1..layer4
STRIDES = (1, 2, 2, 2)


def blk(n_bytes: int) -> int:
    """One allocation of `n_bytes`, as the allocator counts it."""
    return -(-n_bytes // BLOCK) * BLOCK


@dataclass(frozen=True)
class Block:
    """One residual block: its channels and its input and output side lengths."""

    name: str
    in_ch: int
    width: int  # Bottleneck: the 1x1/3x3 width; BasicBlock: planes
    out_ch: int
    stride: int
    h_in: int
    h_out: int
    downsample: bool


def expansion(m: ModelSpec) -> int:
    return 4 if m.conv_bottleneck else 1


def stem_sides(image_size: int) -> tuple[int, int]:
    """Side of conv1's output and of maxpool's: (size + 2 x padding - kernel) // stride + 1 (torch Conv2d)."""
    h1 = (image_size + 2 * 3 - 7) // 2 + 1
    return h1, (h1 + 2 * 1 - 3) // 2 + 1


def blocks(m: ModelSpec, image_size: int) -> Iterator[Block]:
    """Every residual block in forward order (ResNet._make_layer)."""
    e = expansion(m)
    inplanes, h = 64, stem_sides(image_size)[1]
    for stage, (planes, n_blocks, stride) in enumerate(zip(PLANES, m.conv_blocks, STRIDES, strict=True), start=1):
        width = planes * m.conv_width_per_group // 64 * m.conv_groups if m.conv_bottleneck else planes
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            h_out = (h - 1) // s + 1  # conv3x3 padding 1 and conv1x1 padding 0 give the same side
            yield Block(f"layer{stage}.{i}", inplanes, width, planes * e, s, h, h_out,
                        s != 1 or inplanes != planes * e)
            inplanes, h = planes * e, h_out


def _conv(name: str, out_ch: int, in_ch: int, k: int, groups: int = 1) -> ParamTensor:
    return ParamTensor(name, "linear", (out_ch, in_ch // groups, k, k), 1, name, per_layer=False)


def _bn(name: str, ch: int) -> list[ParamTensor]:
    return [ParamTensor(f"{name}.weight", "norm", (ch,), 1, name, per_layer=False),
            ParamTensor(f"{name}.bias", "norm", (ch,), 1, name, per_layer=False)]


def resnet_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of torchvision's ResNet (sum of numel = sum(p.numel() for p in model.parameters()))."""
    out = [_conv("conv1", 64, 3, 7), *_bn("bn1", 64)]
    for b in blocks(m, 224):  # the image size changes no parameter
        p = b.name
        if m.conv_bottleneck:
            out += [_conv(f"{p}.conv1", b.width, b.in_ch, 1), *_bn(f"{p}.bn1", b.width),
                    _conv(f"{p}.conv2", b.width, b.width, 3, m.conv_groups), *_bn(f"{p}.bn2", b.width),
                    _conv(f"{p}.conv3", b.out_ch, b.width, 1), *_bn(f"{p}.bn3", b.out_ch)]
        else:
            out += [_conv(f"{p}.conv1", b.width, b.in_ch, 3), *_bn(f"{p}.bn1", b.width),
                    _conv(f"{p}.conv2", b.out_ch, b.width, 3), *_bn(f"{p}.bn2", b.out_ch)]
        if b.downsample:
            out += [_conv(f"{p}.downsample.0", b.out_ch, b.in_ch, 1), *_bn(f"{p}.downsample.1", b.out_ch)]
    classes = m.num_classes or 1000
    final = 512 * expansion(m)
    out += [ParamTensor("fc.weight", "head", (classes, final), 1, "fc", per_layer=False),
            ParamTensor("fc.bias", "bias", (classes,), 1, "fc", per_layer=False)]
    return tuple(out)


def bn_channels(m: ModelSpec) -> list[int]:
    """The channels of every BatchNorm2d (for its buffers)."""
    return [t.shape[0] for t in resnet_tensors(m) if t.name.endswith(".weight") and t.kind == "norm"]


def buffer_bytes(m: ModelSpec) -> int:
    """BatchNorm2d buffers: running_mean and running_var (fp32, one per channel), num_batches_tracked (int64)."""
    return sum(2 * blk(4 * ch) + blk(8) for ch in bn_channels(m))


def units(m: ModelSpec, batch: int, image_size: int, c: int, autocast: bool) -> list[Unit]:
    """The stem, each block and the head, with what autograd keeps of each (module docstring), for `batch` images
    of image_size x image_size at `c` bytes per activation element (4 in fp32, 2 under autocast)."""
    from vramcalc.core.memory.classic import Unit

    tensors = {t.name: t for t in resnet_tensors(m)}

    def grads(prefix: str) -> int:  # fp32 gradients of the unit's parameters (weights stay fp32 under autocast)
        return sum(blk(4 * t.numel) for n, t in tensors.items() if n.startswith(prefix))

    def copies(*names: str) -> int:  # autocast: the 16-bit copy of each conv/fc weight, cached for the forward
        return sum(blk(c * tensors[n].numel) for n in names) if autocast else 0

    def act(ch: int, side: int) -> int:
        return blk(c * batch * ch * side * side)

    def stats(*chs: int) -> int:  # batch norm's fp32 save_mean and save_invstd
        return sum(2 * blk(4 * ch) for ch in chs)

    h1, h2 = stem_sides(image_size)
    image = blk(4 * batch * 3 * image_size * image_size)
    # conv1 saves the image (AMP: its 16-bit cast; the fp32 image is the input, alive through the forward),
    # bn1 saves conv1's output, relu the normalized output it overwrote, maxpool that and its int64 indices.
    stem_saved = (act(3, image_size) if autocast else image) + 2 * act(64, h1) + stats(64) \
        + act(64, h2) + blk(8 * batch * 64 * h2 * h2)
    out = [Unit("stem (conv1, bn1, relu, maxpool)", stem_saved, copies("conv1"), grads("conv1") + grads("bn1"),
                0, 2 * act(64, h1), 2 * act(64, h1), image if autocast else 0)]
    for b in blocks(m, image_size):
        p = b.name
        ds = (f"{p}.downsample.0",) if b.downsample else ()
        if m.conv_bottleneck:
            # conv1, bn1 out (1x1 at the input side); conv2, bn2 out (3x3, strided); conv3 out; the block output
            # (bn3's output after += identity and relu, in place); the downsample conv's output (saved by its bn).
            saved = 2 * act(b.width, b.h_in) + 2 * act(b.width, b.h_out) + 2 * act(b.out_ch, b.h_out) \
                + stats(b.width, b.width, b.out_ch)
            names = (f"{p}.conv1", f"{p}.conv2", f"{p}.conv3", *ds)
            widest = max(act(b.width, b.h_in), act(b.out_ch, b.h_out))
        else:
            saved = 2 * act(b.width, b.h_out) + 2 * act(b.out_ch, b.h_out) + stats(b.width, b.out_ch)
            names = (f"{p}.conv1", f"{p}.conv2", *ds)
            widest = max(act(b.width, b.h_out), act(b.out_ch, b.h_out))
        if b.downsample:
            saved += act(b.out_ch, b.h_out) + stats(b.out_ch)
        # Forward: the downsample's bn output lives until the add; backward: the output's gradient (kept for the
        # identity branch) and the gradient being computed at the widest op, and the input's gradient.
        fwd = act(b.out_ch, b.h_out) if b.downsample else 0
        bwd = 2 * act(b.out_ch, b.h_out) + 2 * widest + act(b.in_ch, b.h_in)
        bwd_end = act(b.in_ch, b.h_in) + act(b.out_ch, b.h_out)
        out.append(Unit(p, saved, copies(*names), grads(p + "."), fwd, bwd, bwd_end))
    final = 512 * expansion(m)
    classes = m.num_classes or 1000
    # avgpool's output (saved by fc), log_softmax's fp32 output (saved by nll_loss), the int64 labels.
    head_saved = blk(c * batch * final) + blk(4 * batch * classes) + blk(8 * batch)
    logits = blk(c * batch * classes) + (blk(4 * batch * classes) if autocast else 0)
    out.append(Unit("head (avgpool, fc, cross_entropy)", head_saved, copies("fc.weight"), grads("fc."),
                    logits, 2 * blk(4 * batch * classes), blk(c * batch * final)))
    return out
