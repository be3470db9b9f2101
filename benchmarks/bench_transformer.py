"""Speed of normlab's transformer against torch (CPU, 2 threads), at the experiments' shapes.

Run with ``make bench`` or ``python benchmarks/bench_transformer.py [--quick] [--profile]``.

What is measured, in float32, side by side with the same computation in torch:

* ``TransformerEncoderLayer`` alone, forward + backward (input and every parameter
  gradient), at batch 32, context 64, d_model 64, 4 heads, feed-forward 256: the causal
  Pre-LN GELU block of the language model, the same with a padding mask (holes in it),
  and torch's default Post-LN ReLU block;
* one training step of the language model (2 such blocks, vocabulary of the corpus):
  forward, masked cross-entropy, backward, Adam step; torch runs the same model assembled
  from its modules, with ``torch.optim.Adam``.

Both implementations start from the same weights and must agree before they are timed.
Timing follows ``bench_layers.py`` (its helpers are imported): alternating paired rounds,
each sample after a pause that lets the other library's threads go idle, rounds during
which other processes kept the cores busy dropped and rerun; the table gives the median
ratio normlab / torch with its interquartile range. ``--profile`` adds where normlab's time
goes in one language-model step (cProfile, by function).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    warn_if_busy,  # the helpers of the layer benchmark, shared
)

from normlab import data, nn

DTYPE = np.float32
SEED = 0
BATCH, CONTEXT, D_MODEL, HEADS, FEEDFORWARD, LAYERS = 32, 64, 64, 4, 256, 2


@dataclass
class Case:
    """One timed computation: how to build its normlab and torch versions."""

    name: str
    describe: str
    make: object  # (rng) -> {"normlab": callable, "torch": callable}
    timings: dict = field(default_factory=dict)
    busy_rounds: int = 0


# ---------------------------------------------------------------------------
# The layer alone
# ---------------------------------------------------------------------------


def holes_mask(rng) -> np.ndarray:
    """(N, T) with about 10 % padding at random positions, position 0 always real."""
    mask = rng.random((BATCH, CONTEXT)) > 0.1
    mask[:, 0] = True
    return mask


def layer_steps(rng, *, norm_first: bool, activation: str, causal: bool, padded: bool):
    ours = nn.TransformerEncoderLayer(
        D_MODEL,
        HEADS,
        FEEDFORWARD,
        activation=activation,
        norm_first=norm_first,
        causal=causal,
        rng=rng,
    )
    x = rng.normal(size=(BATCH, CONTEXT, D_MODEL)).astype(DTYPE)
    dy = rng.normal(size=x.shape).astype(DTYPE)
    mask = holes_mask(rng) if padded else None
    steps = {"normlab": lambda: (ours(x, mask=mask), ours.backward(dy))}
    if torch is None:
        return steps, None
    theirs = torch.nn.TransformerEncoderLayer(
        D_MODEL,
        HEADS,
        FEEDFORWARD,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    theirs.load_state_dict({name: torch.from_numpy(v) for name, v in ours.state_dict().items()})
    x_torch = torch.from_numpy(x).requires_grad_(True)
    dy_torch = torch.from_numpy(dy if mask is None else dy * mask[..., None])
    inputs = (x_torch, *theirs.parameters())
    keywords = {}
    if causal:
        keywords["src_mask"] = torch.ones(CONTEXT, CONTEXT, dtype=torch.bool).triu(1)
        keywords["is_causal"] = True
    if mask is not None:
        keywords["src_key_padding_mask"] = torch.from_numpy(~mask)

    def torch_step():
        y = theirs(x_torch, **keywords)
        return y, torch.autograd.grad(y, inputs, dy_torch)

    steps["torch"] = torch_step

    def check() -> float:
        y, _ = steps["normlab"]()
        y_torch, _ = torch_step()
        real = np.ones((BATCH, CONTEXT), dtype=bool) if mask is None else mask
        expected = y_torch.detach().numpy()[real]
        return float(np.max(np.abs(y[real] - expected)) / np.max(np.abs(expected)))

    return steps, check


# ---------------------------------------------------------------------------
# One training step of the language model
# ---------------------------------------------------------------------------


def torch_language_model(config: nn.TransformerLMConfig):
    """The same model assembled from torch modules, with normlab's state_dict names."""

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token_embedding = torch.nn.Embedding(config.vocab_size, config.d_model)
            self.position_embedding = torch.nn.Embedding(config.context_length, config.d_model)
            self.blocks = torch.nn.ModuleList(
                torch.nn.TransformerEncoderLayer(
                    config.d_model,
                    config.num_heads,
                    config.dim_feedforward,
                    dropout=0.0,
                    activation=config.activation,
                    batch_first=True,
                    norm_first=config.norm_first,
                )
                for _ in range(config.num_layers)
            )
            self.final_norm = torch.nn.LayerNorm(config.d_model)
            self.head = torch.nn.Linear(config.d_model, config.vocab_size)
            causal = torch.ones(CONTEXT, CONTEXT, dtype=torch.bool).triu(1)
            self.register_buffer("causal", causal, persistent=False)
            self.register_buffer("positions", torch.arange(CONTEXT), persistent=False)

        def forward(self, ids):
            h = self.token_embedding(ids) + self.position_embedding(self.positions)
            for block in self.blocks:
                h = block(h, src_mask=self.causal, is_causal=True)
            return self.head(self.final_norm(h))

    return Model()


def language_model_steps(rng):
    corpus = data.load_char_corpus()
    config = nn.TransformerLMConfig(
        vocab_size=corpus.vocab_size,
        context_length=CONTEXT,
        d_model=D_MODEL,
        num_heads=HEADS,
        num_layers=LAYERS,
        dim_feedforward=FEEDFORWARD,
    )
    ours = nn.TransformerLM.from_config(config, rng=rng)
    ids, targets = data.sample_windows(corpus.train, BATCH, CONTEXT, rng)
    optimizer = nn.Adam(ours.params, ours.grads, lr=1e-3)
    state = ours.state_dict()

    def normlab_step():
        loss, dlogits = ours.loss(ids, targets)
        ours.backward(dlogits)
        optimizer.step()
        return loss

    steps = {"normlab": normlab_step}
    if torch is None:
        return steps, None
    theirs = torch_language_model(config)
    theirs.load_state_dict({name: torch.from_numpy(v) for name, v in state.items()})
    optimizer_torch = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    ids_torch, targets_torch = torch.from_numpy(ids), torch.from_numpy(targets).reshape(-1)

    def torch_step():
        optimizer_torch.zero_grad(set_to_none=True)
        logits = theirs(ids_torch)
        logit_rows = logits.reshape(-1, config.vocab_size)
        loss = torch.nn.functional.cross_entropy(logit_rows, targets_torch)
        loss.backward()
        optimizer_torch.step()
        return loss.item()

    steps["torch"] = torch_step

    def check() -> float:  # the first step of both, from the same weights: the same loss
        loss, loss_torch = normlab_step(), torch_step()
        return abs(loss - loss_torch) / loss_torch

    return steps, check


def benchmark_cases() -> list[Case]:
    shape = f"{BATCH}×{CONTEXT}×{D_MODEL}, {HEADS} heads, FF {FEEDFORWARD}"
    return [
        Case(
            "TransformerEncoderLayer fwd+bwd",
            f"Pre-LN, GELU, causal; {shape}",
            lambda rng: layer_steps(
                rng, norm_first=True, activation="gelu", causal=True, padded=False
            ),
        ),
        Case(
            "TransformerEncoderLayer fwd+bwd",
            f"Pre-LN, GELU, causal, ~10 % padding (holes); {shape}",
            lambda rng: layer_steps(
                rng, norm_first=True, activation="gelu", causal=True, padded=True
            ),
        ),
        Case(
            "TransformerEncoderLayer fwd+bwd",
            f"Post-LN, ReLU (torch's default); {shape}",
            lambda rng: layer_steps(
                rng, norm_first=False, activation="relu", causal=False, padded=False
            ),
        ),
        Case(
            "TransformerLM training step",
            f"{LAYERS} Pre-LN blocks, {shape}, vocabulary of the corpus; fwd, loss, bwd, Adam",
            language_model_steps,
        ),
    ]


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------


def run_case(case: Case, repeats: int) -> None:
    steps, check = case.make(np.random.default_rng(SEED))
    if check is not None:
        error = check()
        if error > 1e-4:
            raise AssertionError(f"{case.name} ({case.describe}): the two differ by {error}")
    case.timings, case.busy_rounds = time_alternating(steps, repeats)


def profile_language_model_step(steps: int = 20, top: int = 12) -> str:
    """Where the time of one normlab language-model step goes: a table by function."""
    step = language_model_steps(np.random.default_rng(SEED))[0]["normlab"]
    step()  # warm up
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # own time of every function
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = [
        f"Where normlab's time goes in one language-model step (cProfile, {steps} steps, "
        "own time per function, which includes the numpy calls it makes):",
        "",
        "| function | ms per step | share |",
        "|---|---|---|",
    ]
    for (filename, line, function), entry in rows:
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({function})"
        if filename.startswith("~"):
            where = function
        lines.append(f"| `{where}` | {entry[2] / steps * 1e3:.2f} | {entry[2] / total:.0%} |")
    lines.append(f"| total | {total / steps * 1e3:.2f} | 100% |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The demonstration: the 2-layer Pre-LN model trained on the corpus for about a minute
# ---------------------------------------------------------------------------

#: Steps of the demonstration: about a minute on 2 quiet cores (the report gives the time).
DEMO_STEPS = 2000
#: Adam's learning rate of the demonstration, the best of DEMO_LEARNING_RATES on the
#: validation split (``--demo-lr-sweep`` reruns that choice).
DEMO_LR = 1e-2
DEMO_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)


def demo_setup(lr: float):
    from normlab import training

    return training.LMTrainingSetup(
        steps=DEMO_STEPS,
        batch_size=BATCH,
        context_length=CONTEXT,
        lr=lr,
        warmup_steps=100,
        decay="cosine",
        eval_every=DEMO_STEPS // 8,
    )


def demo_config():
    return nn.TransformerLMConfig(
        vocab_size=data.load_char_corpus().vocab_size,
        context_length=CONTEXT,
        d_model=D_MODEL,
        num_heads=HEADS,
        num_layers=LAYERS,
        dim_feedforward=FEEDFORWARD,
        norm="layer",
        norm_first=True,
    )


def train_demo(lr: float) -> tuple[dict, float]:
    """One run of the demonstration: its results and its wall time in seconds."""
    from normlab import training

    start = time.perf_counter()
    results = training.train_language_model(demo_config(), demo_setup(lr), seed=SEED)
    return results, time.perf_counter() - start


def demo_report(lr: float = DEMO_LR) -> str:
    results, seconds = train_demo(lr)
    lines = [
        f"Training the {LAYERS}-layer Pre-LN language model (d_model {D_MODEL}, {HEADS} heads, "
        f"context {CONTEXT}, batch {BATCH}; Adam, lr {lr:g} after 100 warm-up steps, cosine "
        f"decay) on the corpus: {results['steps']} steps in {seconds:.1f} s wall time, "
        f"validation on all {len(data.load_char_corpus().validation):,} validation characters. "
        f"Unigram baseline: {results['unigram_baseline']:.3f} nats per character.",
        "",
        "| step | validation loss (nats/char) | training loss since the previous row |",
        "|---|---|---|",
    ]
    for step, validation, train in zip(
        results["eval_steps"], results["validation_loss"], results["train_loss"], strict=True
    ):
        train_cell = "" if train is None else f"{train:.3f}"
        lines.append(f"| {step} | {validation:.3f} | {train_cell} |")
    return "\n".join(lines) + "\n"


def demo_lr_sweep() -> str:
    lines = ["| lr | final validation loss | seconds |", "|---|---|---|"]
    for lr in DEMO_LEARNING_RATES:
        results, seconds = train_demo(lr)
        lines.append(f"| {lr:g} | {results['final_validation_loss']:.3f} | {seconds:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_report(cases: list[Case], repeats: int, other_load: float | None) -> str:
    have_torch = torch is not None
    lines = ["## normlab transformer speed", "", *machine_info()]
    if other_load is not None:
        lines.append(f"- other processes kept {other_load:.2f} cores busy on average meanwhile")
    lines += [
        "",
        f"Median over {repeats} alternating rounds (each sample after a {SETTLE_SECONDS} s "
        "pause and one untimed call); the ratio is normlab time / torch time, paired per "
        "round, with its interquartile range in brackets (< 1: normlab is faster). Rounds "
        f"during which other processes kept more than {QUIET_LOAD} cores busy are rerun (at "
        f"most {MAX_ROUNDS_FACTOR}× the rounds); the last column counts the busy rounds kept.",
        "",
    ]
    header = ["case", "setting", "normlab ms"]
    if have_torch:
        header += ["torch ms", "normlab ÷ torch"]
    header.append("busy rounds kept")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for case in cases:
        row = [case.name, case.describe, time_cell(case.timings["normlab"])]
        if have_torch:
            row += [
                time_cell(case.timings["torch"]),
                ratio_cell(case.timings["normlab"], case.timings["torch"]),
            ]
        row.append(str(case.busy_rounds))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = benchmark_arguments(__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="where normlab's LM step spends")
    parser.add_argument("--demo", action="store_true", help="train the LM for about a minute")
    parser.add_argument(
        "--demo-lr-sweep", action="store_true", help="the demo at each of DEMO_LEARNING_RATES"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the timed cases")
    args = parser.parse_args(argv)
    repeats = chosen_repeats(parser, args)

    limiter = limit_threads()
    other_load = OtherLoad()
    cases = [] if args.no_timing else benchmark_cases()
    for case in cases:
        print(f"timing {case.name}: {case.describe} ...", file=sys.stderr, flush=True)
        run_case(case, repeats)
    cores_used_by_others = other_load.cores_used_by_others()
    report = markdown_report(cases, repeats, cores_used_by_others) if cases else ""
    if args.profile:
        report += "\n" + profile_language_model_step()
    if args.demo:
        report += "\n" + demo_report()
    if args.demo_lr_sweep:
        report += "\n" + demo_lr_sweep()
    if limiter is not None:
        limiter.restore_original_limits()
    warn_if_busy(cores_used_by_others)
    publish(report, args.markdown_out)


if __name__ == "__main__":
    main()
