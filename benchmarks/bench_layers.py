"""Speed of normlab's layers against torch.nn (CPU) and a plain numpy version.

Run with ``make bench`` or ``python benchmarks/bench_layers.py [--quick]``.

What is measured, for every layer and shape of the performance issue:

* the time of a forward pass alone and of a forward plus backward pass, in
  float32 with 2 threads, for three implementations: normlab, ``torch.nn``
  (when torch is installed) and ``naive``, the textbook version of
  :mod:`normlab.reference` (plain numpy, no speed code);
* the ratio normlab time / torch time. The implementations run in one
  process, alternating (normlab, torch, naive, then the next order), and each
  round gives one *paired* ratio, so slow drifts of the machine affect both
  sides of a pair. Before each sample the process pauses (SETTLE_SECONDS) so
  that the worker threads the previous library left spinning go idle, then
  makes one untimed call. Other processes on the machine hurt torch's two
  threads far more than numpy's single one, so a round during which they kept
  more than QUIET_LOAD cores busy (/proc/stat) is dropped and run again. The
  table gives the median ratio and its interquartile range over the rounds;
* the peak extra memory of one forward+backward on a fresh layer (tracemalloc,
  which sees numpy's allocations), as a multiple of the input's size. It
  counts everything the call allocates: the output (held through the backward,
  as in training), the input gradient, the cache kept for the backward and any
  temporaries;
* with ``--figures-quick``, the wall time of ``python -m normlab figures --quick``.

The forward is timed as in a training step: training mode, and for torch with
autograd recording the graph (normlab's forward likewise keeps its cache).
The backward of torch is ``torch.autograd.grad``, which returns fresh
gradients as normlab's ``backward`` does. torch receives its natural,
contiguous layout: channels-first (N, C, H, W) and (N, C, L) for BatchNorm and
GroupNorm, where normlab takes the same data features-last.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # optional: limits the threads of numpy's BLAS
    import threadpoolctl
except ImportError:
    threadpoolctl = None

try:  # optional: the reference implementation
    import torch
except ImportError:
    torch = None

import normlab as nl
from normlab import reference

NUM_THREADS = 2
DTYPE = np.float32
EPS = 1e-5
NUM_GROUPS = 8  # GroupNorm: 64 channels in groups of 8
MIN_SAMPLE_SECONDS = 0.05  # each timed sample repeats the call until it lasts this long
# Pause before each sample: after a call, OpenBLAS's idle worker threads keep spinning for
# about 0.1 s (2**28 clock ticks) and torch's OpenMP threads for a few ms. On 2 cores a
# spinning thread of one library steals a core from the other one's next sample.
SETTLE_SECONDS = 0.12
SEED = 0
OTHER_LOAD_WARNING = 0.2  # cores kept busy by other processes during the run
QUIET_LOAD = 0.25  # a round is quiet when other processes kept at most this many cores busy
MAX_ROUNDS_FACTOR = 3  # rounds run at most, as a multiple of the quiet rounds wanted


# ---------------------------------------------------------------------------
# The cases: one layer at one shape, in three implementations
# ---------------------------------------------------------------------------


@dataclass
class Case:
    """One layer at one shape: how to build it in normlab, torch and plainly."""

    layer: str
    shape: tuple[int, ...]  # normlab's features-last shape
    torch_layout: str = "same"  # or "channels-first"
    timings: dict = field(default_factory=dict)
    busy_rounds: dict = field(default_factory=dict)  # rounds kept although others were busy
    memory: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def normlab_layer(self):
        kind = {"BatchNorm": "batch", "LayerNorm": "layer", "RMSNorm": "rms", "GroupNorm": "group"}
        return nl.make_norm(kind[self.layer], self.channels, eps=EPS, num_groups=NUM_GROUPS)

    def textbook_functions(self):
        """(forward(x) -> (out, cache), backward(dout, cache)) from normlab.reference."""
        weight = np.ones(self.channels, dtype=DTYPE)
        bias = np.zeros(self.channels, dtype=DTYPE)
        if self.layer == "BatchNorm":
            forward = functools.partial(
                reference.batch_norm_forward, weight=weight, bias=bias, eps=EPS
            )
            return forward, reference.batch_norm_backward
        if self.layer == "LayerNorm":
            forward = functools.partial(
                reference.layer_norm_forward, weight=weight, bias=bias, eps=EPS
            )
            return forward, reference.layer_norm_backward
        if self.layer == "RMSNorm":
            forward = functools.partial(reference.rms_norm_forward, weight=weight, eps=EPS)
            return forward, reference.rms_norm_backward
        forward = functools.partial(
            reference.group_norm_forward, num_groups=NUM_GROUPS, weight=weight, bias=bias, eps=EPS
        )
        return forward, reference.group_norm_backward

    def torch_layer(self):
        if self.layer == "BatchNorm":
            batchnorm = torch.nn.BatchNorm2d if len(self.shape) == 4 else torch.nn.BatchNorm1d
            return batchnorm(self.channels, eps=EPS)
        if self.layer == "LayerNorm":
            return torch.nn.LayerNorm(self.channels, eps=EPS)
        if self.layer == "RMSNorm":
            return torch.nn.RMSNorm(self.channels, eps=EPS)
        return torch.nn.GroupNorm(NUM_GROUPS, self.channels, eps=EPS)

    def to_torch_layout(self, array: np.ndarray) -> np.ndarray:
        """(N, ..., C) -> (N, C, ...) contiguous, for torch's channels-first layers."""
        if self.torch_layout == "channels-first" and array.ndim > 2:
            return np.ascontiguousarray(np.moveaxis(array, -1, 1))
        return array

    def from_torch_layout(self, array: np.ndarray) -> np.ndarray:
        if self.torch_layout == "channels-first" and array.ndim > 2:
            return np.moveaxis(array, 1, -1)
        return array


def benchmark_cases() -> list[Case]:
    return [
        Case("LayerNorm", (16, 128, 512)),
        Case("LayerNorm", (64, 256, 768)),
        Case("LayerNorm", (8, 64)),
        Case("RMSNorm", (16, 128, 512)),
        Case("RMSNorm", (64, 256, 768)),
        Case("RMSNorm", (8, 64)),
        Case("BatchNorm", (32, 16, 16, 64), "channels-first"),
        Case("BatchNorm", (16, 128, 512), "channels-first"),
        Case("BatchNorm", (8, 64)),
        Case("GroupNorm", (32, 16, 16, 64), "channels-first"),
        Case("GroupNorm", (8, 64)),
    ]


# ---------------------------------------------------------------------------
# The timed steps: each returns (forward, forward + backward) callables
# ---------------------------------------------------------------------------


def normlab_steps(case: Case, x: np.ndarray, dy: np.ndarray):
    layer = case.normlab_layer()

    def forward():
        return layer(x)

    def forward_backward():  # the output stays alive through the backward, as in training
        y = layer(x)
        return y, layer.backward(dy)

    return forward, forward_backward


def naive_steps(case: Case, x: np.ndarray, dy: np.ndarray):
    textbook_forward, textbook_backward = case.textbook_functions()

    def forward():
        return textbook_forward(x)[0]

    def forward_backward():
        y, cache = textbook_forward(x)
        return y, textbook_backward(dy, cache)[0]

    return forward, forward_backward


def torch_steps(case: Case, x: np.ndarray, dy: np.ndarray):
    layer = case.torch_layer().train()
    x_torch = torch.from_numpy(case.to_torch_layout(x)).requires_grad_(True)
    dy_torch = torch.from_numpy(case.to_torch_layout(dy))
    inputs = (x_torch, *layer.parameters())

    def forward():
        return layer(x_torch)

    def forward_backward():
        y = layer(x_torch)
        return y, torch.autograd.grad(y, inputs, dy_torch)[0]

    return forward, forward_backward


def check_agreement(case: Case, steps: dict) -> None:
    """Every implementation must compute the same y and dx before its speed means anything."""
    textbook_results = steps["naive"][1]()
    for name, (_, forward_backward) in steps.items():
        results = forward_backward()
        if name == "torch":
            results = [case.from_torch_layout(tensor.detach().numpy()) for tensor in results]
        for what, result, expected in zip(("y", "dx"), results, textbook_results, strict=True):
            error = float(np.max(np.abs(result - expected) / np.max(np.abs(expected))))
            if error > 1e-3:
                raise AssertionError(f"{case.layer}{case.shape}: {name}'s {what} is off by {error}")


class OtherLoad:
    """How busy other processes kept the CPU while the benchmark ran (Linux only).

    The busy time of all cores (/proc/stat) minus this process's own CPU time,
    divided by the wall time: 0.0 means the benchmark had the machine to itself,
    1.0 that other processes kept one core busy on average. Timings taken while
    others use the cores are slower and noisier, torch's threads more so.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        stat = Path("/proc/stat")
        if not stat.exists():
            return None
        fields = [int(value) for value in stat.read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        busy_seconds = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy_seconds, own.user + own.system, time.perf_counter()

    def cores_used_by_others(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end, strict=True))
        return max(busy - own, 0.0) / wall


def time_sample(function, calls: int) -> float:
    """Seconds per call, over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def calls_per_sample(function) -> int:
    """How many back-to-back calls make one sample last about MIN_SAMPLE_SECONDS."""
    seconds = time_sample(function, 1)
    return max(1, int(MIN_SAMPLE_SECONDS / max(seconds, 1e-7)))


def time_alternating(functions: dict, repeats: int) -> tuple[dict[str, list[float]], int]:
    """Per-call seconds of each function, one sample of each per round, in rotating order.

    Before each sample the other library's threads are let go idle (SETTLE_SECONDS)
    and the function is called once untimed, so each sample sees the steady state
    of a loop calling that function alone. A round during which other processes
    kept more than QUIET_LOAD cores busy is dropped and run again, up to
    MAX_ROUNDS_FACTOR × ``repeats`` rounds; if fewer than ``repeats`` quiet rounds
    came by then, the busy rounds fill the gap. Returns the samples and the number
    of busy rounds among them.
    """
    for function in functions.values():  # warm up: caches, allocator, lazy imports
        function()
    calls = {name: calls_per_sample(function) for name, function in functions.items()}
    names = list(functions)
    quiet_rounds, busy_rounds = [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(MAX_ROUNDS_FACTOR * repeats):
            shift = round_index % len(names)
            load = OtherLoad()
            samples = {}
            for name in names[shift:] + names[:shift]:
                time.sleep(SETTLE_SECONDS)
                functions[name]()
                samples[name] = time_sample(functions[name], calls[name])
            others = load.cores_used_by_others()
            quiet = others is None or others <= QUIET_LOAD
            (quiet_rounds if quiet else busy_rounds).append(samples)
            if len(quiet_rounds) == repeats:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    busy_used = busy_rounds[: repeats - len(quiet_rounds)]
    rounds = quiet_rounds + busy_used
    return {name: [samples[name] for samples in rounds] for name in names}, len(busy_used)


def peak_memory_multiple(make_step, case: Case, x: np.ndarray, dy: np.ndarray) -> float:
    """Peak memory allocated during one forward+backward of a fresh layer, / x.nbytes.

    The output is held until the backward returns, as in a training step.
    """
    gc.collect()
    _, forward_backward = make_step(case, x, dy)
    tracemalloc.start()
    try:
        result = forward_backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / x.nbytes


def run_case(case: Case, repeats: int) -> None:
    rng = np.random.default_rng(SEED)
    x = rng.normal(1.0, 2.0, size=case.shape).astype(DTYPE)
    dy = rng.normal(size=case.shape).astype(DTYPE)
    makers = {"normlab": normlab_steps, "naive": naive_steps}
    if torch is not None:
        makers = {"normlab": normlab_steps, "torch": torch_steps, "naive": naive_steps}
    steps = {name: make(case, x, dy) for name, make in makers.items()}
    check_agreement(case, steps)
    for index, kind in enumerate(("forward", "forward+backward")):
        functions = {name: pair[index] for name, pair in steps.items()}
        case.timings[kind], case.busy_rounds[kind] = time_alternating(functions, repeats)
    case.memory = {
        name: peak_memory_multiple(makers[name], case, x, dy) for name in ("normlab", "naive")
    }


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def median_and_iqr(values) -> tuple[float, float, float]:
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[1], quartiles[0], quartiles[2]


def ratio_cell(numerators, denominators) -> str:
    """Median of the paired ratios with their interquartile range: ``1.23 (1.18–1.30)``."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    median, low, high = median_and_iqr(ratios)
    return f"{median:.2f} ({low:.2f}–{high:.2f})"


def time_cell(seconds) -> str:
    median = statistics.median(seconds)
    return f"{median * 1e3:.3f}" if median < 1e-2 else f"{median * 1e3:.1f}"


def machine_info() -> list[str]:
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    blas = "unknown"
    if threadpoolctl is not None:
        infos = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
        if infos:
            info = infos[0]
            blas = f"{info['internal_api']} {info['version']} ({info.get('architecture')} kernels)"
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    lines = [
        f"- CPU: {cpu_model}, {os.cpu_count()} logical cores",
        f"- threads: {NUM_THREADS} (numpy's BLAS and torch), float32",
        f"- Python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas}"
        + (f", OPENBLAS_CORETYPE={coretype}" if coretype else ""),
        f"- torch {torch.__version__}" if torch is not None else "- torch: not installed",
    ]
    return lines


def markdown_report(cases: list[Case], repeats: int, other_load: float | None) -> str:
    have_torch = torch is not None
    baseline = "torch" if have_torch else "naive"
    lines = ["## normlab speed", "", *machine_info()]
    if other_load is not None:
        lines.append(f"- other processes kept {other_load:.2f} cores busy on average meanwhile")
    lines.append("")
    lines += [
        f"Median over {repeats} alternating rounds (each sample after a "
        f"{SETTLE_SECONDS} s pause and one untimed call); ratios are normlab time / "
        f"{baseline} time, paired per round, with their interquartile range in brackets "
        "(< 1 means normlab is faster). Memory: peak allocated during one forward+backward "
        "of a fresh layer, output held (tracemalloc), as a multiple of the input's size. "
        f"A round during which other processes kept more than {QUIET_LOAD} cores busy is "
        f"dropped and run again (at most {MAX_ROUNDS_FACTOR}× the rounds); the last column "
        "counts the busy rounds that had to be kept (forward, forward+backward): 0 means a "
        "quiet machine.",
        "",
    ]
    if have_torch:
        lines.append(
            "torch gets channels-first contiguous input (N, C, H, W) / (N, C, L) for "
            "BatchNorm and GroupNorm, its natural layout; normlab the same data features-last."
        )
        lines.append("")
    header = [
        "layer",
        "shape (features-last)",
        "fwd ms",
        f"fwd ÷ {baseline}",
        "fwd+bwd ms",
        f"fwd+bwd ÷ {baseline}",
    ]
    if have_torch:
        header += ["torch fwd+bwd ms", "naive fwd+bwd ÷ torch"]
    header += ["memory × input (naive)", "busy rounds kept"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for case in cases:
        fwd, both = case.timings["forward"], case.timings["forward+backward"]
        shape = "×".join(str(n) for n in case.shape)
        if case.torch_layout == "channels-first" and have_torch:
            shape += " (torch: C first)"
        row = [
            case.layer,
            shape,
            time_cell(fwd["normlab"]),
            ratio_cell(fwd["normlab"], fwd[baseline]),
            time_cell(both["normlab"]),
            ratio_cell(both["normlab"], both[baseline]),
        ]
        if have_torch:
            row += [time_cell(both["torch"]), ratio_cell(both["naive"], both["torch"])]
        row.append(f"{case.memory['normlab']:.1f} ({case.memory['naive']:.1f})")
        row.append(f"{case.busy_rounds['forward']}, {case.busy_rounds['forward+backward']}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def time_figures_quick() -> str:
    """Wall time of ``python -m normlab figures --quick``, or why it was skipped."""
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, "-m", "normlab", "figures", "--quick", "--out", out_dir]
        environment = {**os.environ, "MPLBACKEND": "Agg"}
        start = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, env=environment)
        seconds = time.perf_counter() - start
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`python -m normlab figures --quick`: skipped (it failed: {last_line})"
    return f"`python -m normlab figures --quick`: {seconds:.1f} s wall time"


def limit_threads():
    """2 threads for torch and for numpy's BLAS; returns the threadpoolctl limiter (or None)."""
    if torch is not None:
        torch.set_num_threads(NUM_THREADS)
    if threadpoolctl is not None:
        return threadpoolctl.threadpool_limits(limits=NUM_THREADS, user_api="blas")
    print(
        f"threadpoolctl is not installed: numpy's BLAS threads are whatever "
        f"OPENBLAS_NUM_THREADS says ({os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}).",
        file=sys.stderr,
    )
    return None


def benchmark_arguments(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--repeats``, ``--quick`` and ``--markdown-out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=20, help="alternating rounds per case")
    parser.add_argument("--quick", action="store_true", help="5 rounds: a smoke run")
    parser.add_argument("--markdown-out", type=Path, help="also write the table to this file")
    return parser


def chosen_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The rounds per case: 5 with ``--quick``, else ``--repeats`` (at least 2)."""
    repeats = 5 if args.quick else args.repeats
    if repeats < 2:
        parser.error("--repeats must be at least 2 (the spread needs two rounds)")
    return repeats


def warn_if_busy(cores_used_by_others: float | None) -> None:
    """A warning on stderr when other processes kept the machine busy during the run."""
    if cores_used_by_others is not None and cores_used_by_others > OTHER_LOAD_WARNING:
        print(
            f"warning: other processes kept {cores_used_by_others:.2f} cores busy during the "
            "run; the timings are not those of a quiet machine.",
            file=sys.stderr,
        )


def publish(report: str, markdown_out: Path | None) -> None:
    """Print the report, and write it to ``markdown_out`` if given."""
    print(report)
    if markdown_out is not None:
        markdown_out.write_text(report)


def main(argv=None) -> None:
    parser = benchmark_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--figures-quick",
        action="store_true",
        help="also time `python -m normlab figures --quick`",
    )
    args = parser.parse_args(argv)
    repeats = chosen_repeats(parser, args)

    limiter = limit_threads()
    other_load = OtherLoad()
    cases = benchmark_cases()
    for case in cases:
        print(f"timing {case.layer} {case.shape} ...", file=sys.stderr, flush=True)
        run_case(case, repeats)
    if limiter is not None:
        limiter.restore_original_limits()
    cores_used_by_others = other_load.cores_used_by_others()
    warn_if_busy(cores_used_by_others)
    report = markdown_report(cases, repeats, cores_used_by_others)
    if args.figures_quick:
        report += "\n" + time_figures_quick() + "\n"
    publish(report, args.markdown_out)


if __name__ == "__main__":
    main()
