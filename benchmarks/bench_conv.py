"""Speed of normlab's Conv2d and of one CNN training step against torch (CPU, 2 threads).

Run with ``make bench`` or ``python benchmarks/bench_conv.py [--quick]``.

What is measured, in float32:

* ``Conv2d`` alone, forward + backward (dx, dweight, dbias), at the shapes of the digits
  CNN (8×8 images, batch 32 and 128: the first block 1 -> 16 channels, the second
  16 -> 32 at 4×4) and at a larger, more typical shape (32×32 images, 16 -> 16 channels);
* one training step of the CNN (:class:`normlab.nn.CNN`: forward, softmax cross-entropy,
  backward, an SGD step with momentum) and of the same network assembled from torch
  modules, on digits-sized input and on 32×32×3 images, with BatchNorm and GroupNorm.

Both libraries run in one process, alternating, with the method of
``benchmarks/bench_layers.py`` (whose helpers this file imports): each round gives one
paired ratio normlab time / torch time, a pause before every sample lets the other
library's threads go idle, rounds during which other processes kept the cores busy are
run again, and the table gives the median ratio with its interquartile range.

torch gets its natural layout, channels-first (N, C, H, W); normlab the same data
features-last. torch's backward is ``torch.autograd.grad`` for the layer (fresh gradients,
as normlab's ``backward`` returns) and ``loss.backward()`` for the training step, whose
input needs no gradient (normlab's first convolution computes its dx regardless).
``--profile`` adds where normlab's time goes: each step of Conv2d's forward and backward
(padding, the im2col copy, the three matrix products, col2im) and every layer of the CNN.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from bench_layers import (
    MAX_ROUNDS_FACTOR,
    QUIET_LOAD,
    SETTLE_SECONDS,
    OtherLoad,
    benchmark_arguments,
    chosen_repeats,
    limit_threads,
    machine_info,
    publish,
    ratio_cell,
    time_alternating,
    time_cell,
    torch,
    warn_if_busy,
)

from normlab import nn
from normlab.nn.conv import _offset_view, _windows

DTYPE = np.float32
SEED = 0
NUM_CLASSES = 10
LEARNING_RATE = 0.05
MOMENTUM = 0.9
AGREEMENT_TOLERANCE = 1e-3  # max |normlab - torch| / max |torch| before timing


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------


@dataclass
class ConvCase:
    """Conv2d (kernel 3, padding 1) on (N, H, W, C_in) -> C_out, forward + backward."""

    batch: int
    size: int
    in_channels: int
    out_channels: int
    timings: dict = field(default_factory=dict)
    busy_rounds: int = 0

    @property
    def label(self) -> str:
        shape = f"{self.batch}×{self.size}×{self.size}×{self.in_channels}"
        return f"Conv2d 3×3 {shape} -> {self.out_channels}"


@dataclass
class StepCase:
    """One training step of the CNN on (N, H, W, C) images."""

    batch: int
    size: int
    in_channels: int
    norm: str
    widths: tuple[int, ...] = (16, 32)
    timings: dict = field(default_factory=dict)
    busy_rounds: int = 0

    @property
    def label(self) -> str:
        shape = f"{self.batch}×{self.size}×{self.size}×{self.in_channels}"
        return f"CNN step {shape}, widths {self.widths}, {self.norm}"


def benchmark_cases() -> list:
    return [
        ConvCase(32, 8, 1, 16),
        ConvCase(128, 8, 1, 16),
        ConvCase(128, 4, 16, 32),
        ConvCase(32, 32, 16, 16),
        StepCase(32, 8, 1, "batch"),
        StepCase(128, 8, 1, "batch"),
        StepCase(128, 8, 1, "group"),
        StepCase(32, 32, 3, "batch"),
        StepCase(32, 32, 3, "group"),
    ]


# ---------------------------------------------------------------------------
# torch's side: the same layers, channels-first
# ---------------------------------------------------------------------------


def torch_cnn(model: nn.CNN):
    """The torch network with the layers, names and weights of ``model`` (batch or group)."""

    class GlobalAvgPool(torch.nn.Module):
        def forward(self, x):  # (N, C, H, W) -> (N, C), as normlab's GlobalAvgPool2d
            return x.mean(dim=(2, 3))

    layers = OrderedDict()
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv2d):
            layers[name] = torch.nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                bias="bias" in layer.params,
            )
        elif type(layer).__name__ == "BatchNorm":
            layers[name] = torch.nn.BatchNorm2d(layer.num_features, eps=layer.eps)
        elif type(layer).__name__ == "GroupNorm":
            layers[name] = torch.nn.GroupNorm(layer.num_groups, layer.num_channels, eps=layer.eps)
        elif isinstance(layer, nn.ReLU):
            layers[name] = torch.nn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            layers[name] = torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.GlobalAvgPool2d):
            layers[name] = GlobalAvgPool()
        elif isinstance(layer, nn.Linear):
            layers[name] = torch.nn.Linear(layer.in_features, layer.out_features)
        else:
            raise TypeError(f"no torch counterpart for {layer!r} here")
    network = torch.nn.Sequential(layers)
    network.load_state_dict({key: torch.from_numpy(v) for key, v in model.state_dict().items()})
    return network


def channels_first(array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1)))


# ---------------------------------------------------------------------------
# The timed functions
# ---------------------------------------------------------------------------


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def conv_functions(case: ConvCase) -> dict:
    rng = np.random.default_rng(SEED)
    shape = (case.batch, case.size, case.size, case.in_channels)
    x = rng.normal(size=shape).astype(DTYPE)
    conv = nn.Conv2d(case.in_channels, case.out_channels, 3, padding=1, rng=rng)
    dy = rng.normal(size=conv.output_shape(shape)).astype(DTYPE)

    def normlab_step():
        y = conv(x)  # the output stays alive through the backward, as in training
        return y, conv.backward(dy)

    functions = {"normlab": normlab_step}
    if torch is not None:
        layer = torch.nn.Conv2d(case.in_channels, case.out_channels, 3, padding=1)
        layer.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
        x_torch = channels_first(x).requires_grad_(True)
        dy_torch = channels_first(dy)
        inputs = (x_torch, *layer.parameters())

        def torch_step():
            y = layer(x_torch)
            return y, torch.autograd.grad(y, inputs, dy_torch)[0]

        y, dx = normlab_step()
        y_torch, dx_torch = (tensor.detach().numpy() for tensor in torch_step())
        check(case, "y", relative_error(y, np.moveaxis(y_torch, 1, -1)))
        check(case, "dx", relative_error(dx, np.moveaxis(dx_torch, 1, -1)))
        functions["torch"] = torch_step
    return functions


def step_inputs(case: StepCase):
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(case.batch, case.size, case.size, case.in_channels)).astype(DTYPE)
    labels = rng.integers(0, NUM_CLASSES, size=case.batch)
    model = nn.CNN(case.in_channels, NUM_CLASSES, case.widths, case.norm, rng=rng)
    return model, x, labels


def normlab_training_step(model: nn.CNN, x: np.ndarray, labels: np.ndarray):
    optimizer = nn.SGD(model.params, model.grads, lr=LEARNING_RATE, momentum=MOMENTUM)

    def step():
        loss, dlogits = nn.softmax_cross_entropy(model(x), labels)
        model.backward(dlogits)
        optimizer.step()
        return loss

    return step


def step_functions(case: StepCase) -> dict:
    model, x, labels = step_inputs(case)
    if torch is None:
        return {"normlab": normlab_training_step(model, x, labels)}
    network = torch_cnn(model)
    x_torch, labels_torch = channels_first(x), torch.from_numpy(labels)
    logits_error = relative_error(model(x), network(x_torch).detach().numpy())
    check(case, "logits", logits_error)
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def torch_step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(network(x_torch), labels_torch)
        loss.backward()
        optimizer.step()
        return loss

    return {"normlab": normlab_training_step(model, x, labels), "torch": torch_step}


def check(case, what: str, error: float) -> None:
    """The two libraries must compute the same thing before their speed means anything."""
    if error > AGREEMENT_TOLERANCE:
        raise AssertionError(f"{case.label}: normlab's {what} differs from torch's by {error:.2g}")


def run_case(case, repeats: int) -> None:
    functions = conv_functions(case) if isinstance(case, ConvCase) else step_functions(case)
    case.timings, case.busy_rounds = time_alternating(functions, repeats)


# ---------------------------------------------------------------------------
# Where the time goes
# ---------------------------------------------------------------------------


def fastest_ms(function, repeats: int) -> float:
    """The fastest of ``repeats`` calls, in milliseconds, after one untimed call.

    The minimum, not the median: a part's own cost is what it takes undisturbed, and on a
    shared machine a BLAS call whose second thread was descheduled takes a time slice longer.
    """
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return min(samples) * 1e3


def layer_profile(case: StepCase, repeats: int) -> list[str]:
    """Forward and backward milliseconds of every layer of the CNN (fastest of ``repeats``)."""
    model, x, labels = step_inputs(case)
    inputs = [x]
    for layer in model:
        inputs.append(layer(inputs[-1]))
    _, dlogits = nn.softmax_cross_entropy(inputs[-1], labels)
    upstream = [dlogits]
    for layer in reversed(model.layers):
        upstream.append(layer.backward(upstream[-1]))
    upstream = upstream[::-1]  # upstream[k]: the gradient of the output of layer k - 1
    lines = [f"| {case.label} | forward ms | backward ms |", "|---|---|---|"]
    for index, layer in enumerate(model):
        forward = fastest_ms(partial(layer, inputs[index]), repeats)
        layer(inputs[index])  # the cache of this input for the backward
        backward = fastest_ms(partial(layer.backward, upstream[index + 1]), repeats)
        shape = "×".join(str(n) for n in inputs[index].shape)
        lines.append(
            f"| {index} {type(layer).__name__} on {shape} | {forward:.3f} | {backward:.3f} |"
        )
    return lines


def conv_profile(case: ConvCase, repeats: int) -> list[str]:
    """Milliseconds of each step of Conv2d's forward and backward, done one by one (fastest).

    The steps repeat what ``Conv2d.forward`` and ``Conv2d.backward`` do, in their order.
    """
    rng = np.random.default_rng(SEED)
    shape = (case.batch, case.size, case.size, case.in_channels)
    x = rng.normal(size=shape).astype(DTYPE)
    conv = nn.Conv2d(case.in_channels, case.out_channels, 3, padding=1, rng=rng)
    dy = rng.normal(size=conv.output_shape(shape)).astype(DTYPE)
    weight = conv.params["weight"]
    padded = conv._padded(x)
    windows = _windows(padded, conv.kernel_size, conv.stride)
    cols = windows.reshape(len(dy.reshape(-1, case.out_channels)), -1)
    dy_rows = dy.reshape(-1, case.out_channels)
    per_offset = weight.reshape(9, case.in_channels, case.out_channels).transpose(0, 2, 1)
    window_grads = np.matmul(dy_rows, per_offset)

    def col2im():
        dx_padded = np.zeros(padded.shape, DTYPE)
        for index in range(9):
            block = _offset_view(dx_padded, *divmod(index, 3), dy.shape[1:3], conv.stride)
            block += window_grads[index].reshape(block.shape)

    steps = {
        "pad": lambda: conv._padded(x),
        "im2col copy": lambda: windows.reshape(cols.shape),
        "y = cols @ W": lambda: cols @ weight.reshape(-1, case.out_channels),
        "dW = cols.T @ dy": lambda: cols.T @ dy_rows,
        "window grads dy @ W.T": lambda: np.matmul(dy_rows, per_offset),
        "col2im adds": col2im,
    }
    cells = [f"{fastest_ms(step, repeats):.3f}" for step in steps.values()]
    return [f"| {case.label} | " + " | ".join(cells) + " |"], list(steps)


def profile_report(cases: list, repeats: int) -> str:
    lines = ["### Where normlab's time goes (fastest of repeated calls, ms)", ""]
    conv_rows, step_names = [], []
    for case in cases:
        if isinstance(case, ConvCase):
            rows, step_names = conv_profile(case, repeats)
            conv_rows += rows
    lines.append("| Conv2d | " + " | ".join(step_names) + " |")
    lines.append("|" + "|".join(["---"] * (len(step_names) + 1)) + "|")
    lines += conv_rows
    for case in cases:
        if isinstance(case, StepCase):
            lines += ["", *layer_profile(case, repeats)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def markdown_report(cases: list, repeats: int, other_load: float | None) -> str:
    have_torch = torch is not None
    lines = ["## normlab convolution speed", "", *machine_info()]
    if other_load is not None:
        lines.append(f"- other processes kept {other_load:.2f} cores busy on average meanwhile")
    lines += [
        "",
        f"Median over {repeats} alternating rounds (each sample after a {SETTLE_SECONDS} s "
        "pause and one untimed call); the ratio is normlab time / torch time, paired per "
        "round, with its interquartile range in brackets (< 1 means normlab is faster). "
        f"Rounds during which other processes kept more than {QUIET_LOAD} cores busy are run "
        f"again (at most {MAX_ROUNDS_FACTOR}× the rounds); the last column counts the busy "
        "rounds that had to be kept. Shapes are normlab's, features-last; torch gets the "
        "same data channels-first.",
        "",
    ]
    header = ["what", "normlab ms"]
    if have_torch:
        header += ["torch ms", "normlab ÷ torch"]
    header.append("busy rounds kept")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for case in cases:
        row = [case.label, time_cell(case.timings["normlab"])]
        if have_torch:
            torch_times = case.timings["torch"]
            row += [time_cell(torch_times), ratio_cell(case.timings["normlab"], torch_times)]
        row.append(str(case.busy_rounds))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = benchmark_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", action="store_true", help="also profile normlab's CNN training steps"
    )
    args = parser.parse_args(argv)
    repeats = chosen_repeats(parser, args)

    limiter = limit_threads()
    other_load = OtherLoad()
    cases = benchmark_cases()
    for case in cases:
        print(f"timing {case.label} ...", file=sys.stderr, flush=True)
        run_case(case, repeats)
    profile = profile_report(cases, 20 if args.quick else 100) if args.profile else ""
    if limiter is not None:
        limiter.restore_original_limits()
    cores_used_by_others = other_load.cores_used_by_others()
    warn_if_busy(cores_used_by_others)
    report = markdown_report(cases, repeats, cores_used_by_others)
    if profile:
        report += "\n" + profile
    publish(report, args.markdown_out)


if __name__ == "__main__":
    main()
