"""The notebooks' sentences about the default run are true of the committed results.

A notebook sentence that states a result is either printed by a code cell from the
numbers of the run (so it follows a student's parameters), or marked as describing the
default run. The marked ones are listed here with the committed numbers that make them
true (``figures/<name>.json``, written by ``make figures``): when the figures are
regenerated and a number moves, the failing case names the notebook and the sentence to
rewrite. Each entry renders what the notebook must say from the results, either a number
(``"31.4 points below LayerNorm"``) or, through :func:`holds`, a sentence that must be
there *and* be true of the results.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Callable

import pytest
from committed_results import ROOT, folded, results

NOTEBOOKS = ROOT / "notebooks"
#: How a sentence whose claim is false of the results renders: nothing a notebook contains.
FALSE = "<false in the committed default run>: "


def markdown_cells(stem: str) -> list[str]:
    """The markdown cells of ``notebooks/<stem>.ipynb``, white space folded."""
    notebook = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return [
        folded("".join(cell["source"]))
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
    ]


def holds(sentence: str, claim: bool) -> str:
    """``sentence`` if its ``claim`` is true of the results, else a text no notebook has."""
    return sentence if claim else FALSE + sentence


def medians_percent(per_seed: list[list[float]]) -> list[float]:
    """Median over seeds, in percent, of an accuracy table (batch sizes, seeds)."""
    return [100 * statistics.median(row) for row in per_seed]


# --- notebook 2 --------------------------------------------------------------------------


def batch_free_largest_drop(r: dict) -> str:
    drops = [
        max(medians) - min(medians)
        for method in ("layer", "rms", "group")
        for medians in [medians_percent(r["test_accuracy"][method])]
    ]
    return f"within {max(drops):.1f} points of their best at every batch size"


def group_norm_dip(r: dict) -> str:
    medians = medians_percent(r["test_accuracy"]["group"])
    dip = medians.index(min(medians))
    return holds(
        f"GroupNorm's dip at B = {r['batch_sizes'][dip]} comes with a learning rate four "
        "times the rule's",
        r["lr_factor"]["group"][dip] == 4.0,
    )


def unnormalized_from_four(r: dict) -> str:
    verdicts = r["headline"]["minus_layer_verdict"]["none"]
    larger = [size for size in sorted(verdicts, key=int) if int(size) > 2]
    as_good = [size for size in larger if verdicts[size] == "as good as"]
    return holds(
        f"from B = {larger[0]} on (as good as within ±1 point at B = {', '.join(as_good)}, "
        "inconclusive at the other sizes)",
        verdicts["2"] == "worse"
        and all(verdicts[size] in ("as good as", "inconclusive") for size in larger)
        and all(verdicts[size] == "inconclusive" for size in larger if size not in as_good),
    )


def unnormalized_seed_that_fails(r: dict) -> str:
    at_two = [100 * accuracy for accuracy in r["test_accuracy"]["none"][0]]
    failing = [accuracy for accuracy in at_two if accuracy < 20]
    median = r["headline"]["per_method"]["none"]["median_test_accuracy_percent_at_smallest_batch"]
    return holds(
        f"one of its five seeds does not train at all ({min(at_two):.1f} %, chance is 10 %), "
        f"and the median falls to {median:.1f} %",
        len(at_two) == 5 and len(failing) == 1,
    )


def small_batch_verdicts(r: dict) -> str:
    h = r["headline"]
    gaps, verdicts = h["layer_minus_batch_points"], h["batch_minus_layer_verdict"]
    return holds(
        f"At B = 4 and 8 BatchNorm is still worse than LayerNorm, by {gaps['4']:.1f} and "
        f"{gaps['8']:.1f} points, with intervals that exclude 0; from B = 16 on no interval "
        "lies below 0 (at B = 128 BatchNorm is ahead)",
        h["batch_worse_than_layer_at"] == [2, 4, 8] and verdicts["128"] == "better",
    )


def coupling_spreads(r: dict) -> dict[float, list[float]]:
    """Per percentile of x₀, BatchNorm's spread per batch size (mean over seeds, features)."""
    return {
        sample["percentile"]: [
            statistics.mean(row) for row in sample["coupling"]["batch"]["spread"]
        ]
        for sample in r["samples"]
    }


def typical_sample_falls(r: dict) -> str:
    typical = coupling_spreads(r)[50.0]
    ratio = r["headline"]["x0_at_percentile_50"]["measured_over_first_order_theory_at_largest_B"]
    return holds(
        "the typical sample's spread falls steadily**, roughly like $1/\\sqrt B$ and a little "
        "below the first-order formula",
        all(a > b for a, b in itertools.pairwise(typical)) and 0.75 < ratio < 1,
    )


def outlier_hardly_falls(r: dict) -> str:
    spreads = coupling_spreads(r)
    typical, outlier = spreads[50.0], spreads[99.0]
    up_to_64 = [s for s, size in zip(outlier, r["batch_sizes"], strict=True) if size <= 64]
    larger = [o > t for o, t in zip(outlier, typical, strict=True)]
    crossing = larger.index(True) if True in larger else len(larger)
    return holds(
        "the outlying sample's spread hardly falls at all** over the small and medium batch "
        "sizes, and from a moderate B on it is the larger of the two",
        max(up_to_64) / min(up_to_64) < 1.25 and crossing > 0 and all(larger[crossing:]),
    )


# --- notebook 3 --------------------------------------------------------------------------


def drift_verdicts(model: str, against: str, verdict: str) -> Callable[[dict], bool]:
    def check(h: dict) -> bool:
        verdicts = h[model]["verdict"]
        return all(verdicts[f"{norm}_vs_{against}"] == verdict for norm in ("layer", "rms"))

    return check


def lm_rises(h: dict) -> str:
    rises = {
        method: values["rise_to_longest_bin"]
        for method, values in h["none"].items()
        if isinstance(values, dict) and "rise_to_longest_bin" in values
    }
    return holds(
        f"by {min(rises.values()):.2f} to {max(rises.values()):.2f} nats, no normalization "
        "included, and BatchNorm's rises least",
        min(rises, key=rises.get) == "batch" and len(rises) == 4,
    )


# --- notebook 6 --------------------------------------------------------------------------


def accuracy_spread_at_best_rate(h: dict) -> str:
    def spread(network):
        accuracies = [
            one["test_accuracy_percent_at_best_lr"] for one in h[network]["per_norm"].values()
        ]
        return min(accuracies), max(accuracies)

    shallow, deep, cnn = spread("shallow_mlp"), spread("deep_mlp"), spread("cnn")
    return (
        f"close in the shallow MLP (within {shallow[1] - shallow[0]:.1f} points) and the deep "
        f"MLP (within {deep[1] - deep[0]:.1f} points), but not in the CNN after its short "
        f"budget ({cnn[0]:.1f} % to {cnn[1]:.1f} %)"
    )


# --- notebook 7 --------------------------------------------------------------------------


def warmup_runs(h: dict) -> dict[str, dict]:
    """The runs at the smaller and at the larger learning rate."""
    rates = sorted((key for key in h if key.startswith("lr_")), key=lambda key: float(key[3:]))
    return {"smaller": h[rates[0]], "larger": h[rates[-1]]}


def all_fail(runs: dict) -> bool:
    return runs["failed_runs"] == runs["runs"]


def none_fail(runs: dict) -> bool:
    return runs["failed_runs"] == 0


def headline_claim(sentence: str, claim: Callable[[dict], bool]) -> Callable[[dict], str]:
    """An entry for ``sentence`` whose truth ``claim`` reads from the headline."""
    return lambda r: holds(sentence, claim(r["headline"]))


def headline_number(render: Callable[[dict], str]) -> Callable[[dict], str]:
    return lambda r: render(r["headline"])


def stable_drop(model: str) -> Callable[[dict], bool]:
    return lambda h: all(
        values["drop_points"] < 1.0
        for key, values in h[model].items()
        if isinstance(values, dict) and "drop_points" in values
    )


def leak_against_estimate(h: dict) -> str:
    ratios = h["batchnorm_future_total_over_theory_vs_seq_len"]
    return holds(
        f"(*in the default run* {min(ratios):.2f}–{max(ratios):.2f}, below it)", max(ratios) < 1
    )


def leaks_over_batch_norm(h: dict) -> str:
    group = h["group_over_batchnorm_future_total_at_longest_seq_len"]
    instance = h["instance_over_batchnorm_future_total_at_longest_seq_len"]
    return f"they leak {group:.1f}× and {instance:.1f}× as much as BatchNorm at the longest T"


def drifting_losses(h: dict) -> str:
    drops = {
        method: values["drop_points"]
        for method, values in h["drifting"].items()
        if isinstance(values, dict) and "drop_points" in values
    }
    return holds(
        "With drifting activations every method loses, and per-time-step BatchNorm loses the most",
        min(drops.values()) > 5 and max(drops, key=drops.get) == "batch_per_step",
    )


def small_momentum_noise(h: dict) -> str:
    fast, slow = (h[f"momentum_{m}"]["final_std_of_running_mean_in_sigma"] for m in ("0.5", "0.01"))
    return f"the noise is about {fast / slow:.0f} times smaller"


def renorm_reading(h: dict) -> str:
    gaps = h["median_train_eval_gap_points"]
    smallest = str(h["smallest_batch_size"])
    return holds(
        f"(In the default run Batch Renorm is better than BatchNorm at $B = {smallest}$ but far "
        "from GroupNorm, and its gap is a fraction of BatchNorm's.)",
        h["renorm_versus_batch_verdict_at_smallest"] == "better"
        and h["renorm_versus_group_verdict_at_smallest"] == "worse"
        and gaps["batch_renorm"][smallest] < 0.5 * gaps["batch"][smallest],
    )


def invariance_sizes(h: dict) -> str:
    negligible = h["invariant_cells_largest_change_negligible_eps"]
    default = h["invariant_cells_largest_change_default_eps"]
    smallest_change = h["non_invariant_cells_smallest_change"]
    return (
        f"change by at most {negligible:.1e} with a negligible $\\epsilon$ (float64 rounding); "
        f"with the default $\\epsilon$ the scale invariances are off by up to {default:.1e}, the "
        "size of $\\epsilon$ relative to the variance. The non-invariant cells change by "
        f"{100 * smallest_change:.0f} % or more"
    )


def mlp_statistics_carry_the_damage(h: dict) -> bool:
    """Ghost batches of two inside the SGD batch of 32 lose about as much as batches of two."""
    differences = h["mlp"]["difference_to_reference_points"]
    inside, small = differences["inside_fixed_batch"]["2"], differences["small_sgd_batch"]["2"]
    return h["sgd_batch_size"] == 32 and abs(inside / small - 1) < 0.25


def seeds_on_either_side(losses: dict, batching: str) -> bool:
    """Unmasked BatchNorm's seeds: one below every masked seed, one above every masked seed."""
    unmasked, masked = losses["batch"][batching], losses["batch_masked"][batching]
    return len(unmasked) == 2 and min(unmasked) < min(masked) and max(unmasked) > max(masked)


def train_mode_climbs_to_eval(r: dict) -> bool:
    """The right panel: train-mode medians rise with the test batch and end at eval mode's."""
    per_size = [statistics.median(seeds) for seeds in r["probe_train_mode_accuracy"] if seeds]
    eval_mode = statistics.median(r["probe_eval_accuracy"])
    rising = all(a <= b for a, b in itertools.pairwise(per_size))
    return rising and abs(per_size[-1] - eval_mode) < 0.01


#: (notebook, experiment, what the notebook must say, rendered from the committed results)
PINNED: list[tuple[str, str, Callable[[dict], str]]] = [
    # 2 · Batch size
    (
        "02_batch_size",
        "batch_stat_noise",
        headline_claim(
            "*In the default run* the mean is less noisy than B·H·W independent values",
            lambda h: h["positions"]["mean_ratio_to_iid_formula_average"] < 1,
        ),
    ),
    (
        "02_batch_size",
        "batch_stat_noise",
        headline_claim(
            "while the variance is noisier",
            lambda h: h["positions"]["var_ratio_to_iid_formula_average"] > 1,
        ),
    ),
    ("02_batch_size", "batch_coupling", typical_sample_falls),
    ("02_batch_size", "batch_coupling", outlier_hardly_falls),
    (
        "02_batch_size",
        "accuracy_vs_batch_size",
        headline_number(
            lambda h: f"{h['layer_minus_batch_points']['2']:.1f} points below LayerNorm"
        ),
    ),
    ("02_batch_size", "accuracy_vs_batch_size", small_batch_verdicts),
    (
        "02_batch_size",
        "accuracy_vs_batch_size",
        headline_claim(
            "too wide to show the two equal within one point",
            lambda h: h["batch_as_good_as_layer_from_batch_size"] is None,
        ),
    ),
    ("02_batch_size", "accuracy_vs_batch_size", unnormalized_from_four),
    ("02_batch_size", "accuracy_vs_batch_size", unnormalized_seed_that_fails),
    ("02_batch_size", "accuracy_vs_batch_size", batch_free_largest_drop),
    ("02_batch_size", "accuracy_vs_batch_size", group_norm_dip),
    (
        "02_batch_size",
        "statistics_batch",
        headline_claim(
            "Statistics over two samples inside a batch of 32 lose about as much as training "
            "with batches of two",
            mlp_statistics_carry_the_damage,
        ),
    ),
    (
        "02_batch_size",
        "statistics_batch",
        headline_claim(
            "cost about a point, and the ordinary small batch costs no more",
            lambda h: (
                0.5 <= -h["cnn"]["difference_to_reference_points"]["inside_fixed_batch"]["2"] <= 1.5
                and h["cnn"]["difference_to_reference_points"]["small_sgd_batch"]["2"]
                >= h["cnn"]["difference_to_reference_points"]["inside_fixed_batch"]["2"]
            ),
        ),
    ),
    (
        "02_batch_size",
        "group_norm_curve",
        headline_claim(
            "BatchNorm has the lowest error at every N, and its error at two images per device "
            "is no higher than at 32 within the intervals",
            lambda h: (
                all(
                    h["batch"]["mean_test_error_percent"][n]
                    == min(
                        h[m]["mean_test_error_percent"][n]
                        for m in ("batch", "group", "layer", "instance", "none")
                    )
                    for n in h["batch"]["mean_test_error_percent"]
                )
                and h["batch"]["rise_verdict"] != "higher error"
            ),
        ),
    ),
    (
        "02_batch_size",
        "statistics_batch",
        headline_claim(
            "the statistics batch costs this CNN about a point at most (section 4)",
            lambda h: (
                max(
                    -d
                    for d in h["cnn"]["difference_to_reference_points"][
                        "inside_fixed_batch"
                    ].values()
                )
                < 1.5
            ),
        ),
    ),
    (
        "02_batch_size",
        "group_norm_curve",
        headline_claim(
            "The batch-free norms do worse at large N",
            lambda h: all(
                h[m]["mean_test_error_percent"]["32"] > h["batch"]["mean_test_error_percent"]["32"]
                for m in ("group", "layer")
            ),
        ),
    ),
]

PINNED += [
    # 3 · Sequence length
    ("03_sequence_length", "causal_leak", headline_number(leak_against_estimate)),
    ("03_sequence_length", "causal_leak", headline_number(leaks_over_batch_norm)),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "on stationary inputs no method loses accuracy beyond the training length",
            stable_drop("stationary"),
        ),
    ),
    ("03_sequence_length", "length_drift", headline_number(drifting_losses)),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "But LayerNorm and RMSNorm lose about as much as BatchNorm *pooled over time*",
            drift_verdicts("drifting", "batch", "about as much"),
        ),
    ),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "the claim, as stated, is refuted against the BatchNorm the other lessons use; it "
            "holds against per-time-step BatchNorm",
            lambda h: (
                drift_verdicts("drifting", "batch", "about as much")(h)
                and drift_verdicts("drifting", "batch_per_step", "loses less")(h)
            ),
        ),
    ),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "in the default runs our length tests found no failure that a per-token norm avoids "
            "better than BatchNorm pooled over time",
            lambda h: all(
                h[model]["verdict"][f"{norm}_vs_batch"] != "loses less"
                for model in ("stationary", "drifting")
                for norm in ("layer", "rms")
            ),
        ),
    ),
    ("03_sequence_length", "lm_norms", headline_number(lm_rises)),
    # 4 · Training vs inference
    (
        "04_training_vs_inference",
        "running_stats",
        headline_claim(
            "its spread after the last step matches the theory",
            lambda h: (
                abs(
                    h["momentum_0.5"]["final_std_of_running_mean_in_sigma"]
                    / h["momentum_0.5"]["theory_std_of_running_mean_in_sigma"]
                    - 1
                )
                < 0.2
            ),
        ),
    ),
    ("04_training_vs_inference", "running_stats", headline_number(small_momentum_noise)),
    (
        "04_training_vs_inference",
        "running_stats",
        headline_claim(
            "is the best estimate of a fixed population",
            lambda h: (
                min(
                    (v["final_std_of_running_mean_in_sigma"], k)
                    for k, v in h.items()
                    if k.startswith("momentum_")
                )[1]
                == "momentum_None"
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "running_stats",
        headline_claim(
            "averaging that would converge to the wrong value, as the top-right panel shows",
            lambda h: (
                abs(
                    h["cumulative_biased_alternative_over_true_var"]
                    - h["biased_alternative_expected"]
                )
                < 0.02
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "train_eval_gap",
        headline_claim(
            "eval mode is ahead at every batch size below 128, where the two tie, and by far the "
            "most at the smallest",
            lambda h: (
                all(
                    (gap > 0) if int(size) < 128 else (gap == 0)
                    for size, gap in h["eval_minus_train_mode_points"].items()
                )
                and h["largest_eval_train_gap_at_batch_size"] == 2
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "train_eval_gap",
        headline_claim(
            "(in the default run, at the smallest B) recomputing them from the whole training set "
            "with the final weights gives back some accuracy; where they were already good it "
            "changes little",
            lambda h: (
                h["precise_bn_minus_eval_points"]["2"] > 1
                and all(
                    abs(v) < 1
                    for size, v in h["precise_bn_minus_eval_points"].items()
                    if size != "2"
                )
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "precise_bn",
        headline_claim(
            "(in the default run it closes as the weights settle)",
            lambda h: (
                (
                    gains := list(
                        h["per_momentum"]["0.01"]["median_gain_points_by_checkpoint"].values()
                    )
                )
                and abs(gains[-1]) < 1 < max(gains)
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "precise_bn",
        headline_claim(
            "it is a few hundred images in the default run",
            lambda h: 100 <= h["precise_samples_needed"] < 1000,
        ),
    ),
    (
        "04_training_vs_inference",
        "test_time_shift",
        headline_claim(
            "contrast 0.25 costs it most of its accuracy in both models",
            lambda h: all(
                h["median_accuracy_percent"][model]["batch"]["contrast"]["0.25"]
                < 0.5 * h["median_accuracy_percent"][model]["batch"]["contrast"]["1"]
                for model in ("mlp", "cnn")
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "test_time_shift",
        headline_claim(
            "(In the default run LayerNorm and GroupNorm keep their accuracy under contrast in the "
            "MLP but not in the CNN, and the unnormalized MLP is nearly as robust as they are.)",
            lambda h: (
                all(
                    min(h["median_accuracy_percent"]["mlp"][norm]["contrast"].values())
                    > h["median_accuracy_percent"]["mlp"][norm]["contrast"]["1"] - 2
                    and h["median_accuracy_percent"]["cnn"][norm]["contrast"]["0.25"]
                    < h["median_accuracy_percent"]["cnn"][norm]["contrast"]["1"] - 20
                    for norm in ("layer", "group")
                )
                and min(h["median_accuracy_percent"]["mlp"]["none"]["contrast"].values())
                > min(h["median_accuracy_percent"]["mlp"]["layer"]["contrast"].values()) - 2
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "frozen_batchnorm",
        headline_number(
            lambda h: holds(
                f"(in the default run train mode is ahead at $B = {h['largest_batch_size']}$)",
                h["frozen_minus_train_verdict_at_largest"] == "worse",
            )
        ),
    ),
    ("04_training_vs_inference", "batch_renorm", headline_number(renorm_reading)),
    # 5 · RMSNorm vs LayerNorm
    ("05_rms_vs_layernorm", "rms_vs_layernorm", headline_number(invariance_sizes)),
    (
        "05_rms_vs_layernorm",
        "rms_vs_layernorm",
        headline_number(
            lambda h: f"(*in the default run*: {h['rms_vs_layer_zero_mean_default_eps_worst']:.1e})"
        ),
    ),
    (
        "05_rms_vs_layernorm",
        "rms_vs_layernorm",
        headline_number(lambda h: f"it is {h['rms_vs_layer_at_ratio_1_median']:.2f} at $r = 1$"),
    ),
    # 6 · Common claims
    (
        "06_common_claims_tested",
        "learning_rate_maps",
        headline_number(accuracy_spread_at_best_rate),
    ),
    (
        "06_common_claims_tested",
        "learning_rate_maps",
        headline_claim(
            "in the default run (README) the unnormalized networks need He's scale itself",
            lambda h: all(
                h[network]["per_norm"]["none"]["smallest_init_scale_that_trains"] == 1.0
                for network in ("shallow_mlp", "deep_mlp", "cnn")
            ),
        ),
    ),
    (
        "06_common_claims_tested",
        "noisy_batchnorm",
        headline_claim(
            "the noisy shallow MLP stays close to BatchNorm, as Santurkar et al. found for VGG, "
            "while the noisy deep MLP loses most of BatchNorm's advantage and lands level with no "
            "normalization, despite moving its layer inputs far more per step; its seeds cannot "
            "tell either noisy network from the unnormalized one",
            lambda h: (
                abs(h["depth_2"]["noisy_vs_batch_points"]) < 1
                and h["depth_8"]["noisy_vs_batch_verdict"] == "worse"
                and all(
                    h[depth]["noisy_vs_none_verdict"] == "inconclusive"
                    for depth in ("depth_2", "depth_8")
                )
                and all(h[depth]["noisy_over_none_shift"] > 10 for depth in ("depth_2", "depth_8"))
            ),
        ),
    ),
    (
        "06_common_claims_tested",
        "loss_landscape",
        headline_claim(
            "The smoothness ratios are modest there, and their direction depends on the depth",
            lambda h: (
                len(
                    {
                        h[depth]["none_over_batch_loss_variation"] > 1
                        for depth in ("depth_2", "depth_8")
                    }
                )
                == 2
            ),
        ),
    ),
    # 7 · Transformers
    (
        "07_transformers",
        "placement_gradients",
        headline_claim(
            "In the default run it does not: neither placement's last-layer gradient falls with "
            "depth (both slopes are near 0 or above), and Post-LN's gradient is the larger one at "
            "every depth.",
            lambda h: (
                all(h[p]["last_layer_slope_vs_depth"] > -0.1 for p in ("pre_ln", "post_ln"))
                and all(
                    post > h["pre_ln"]["last_layer_gradient_norm"][depth]
                    for depth, post in h["post_ln"]["last_layer_gradient_norm"].items()
                )
            ),
        ),
    ),
    (
        "07_transformers",
        "placement_gradients",
        headline_claim(
            "the stream grows by the printed factor, far below $\\sqrt{L+1}$",
            lambda h: (
                h["pre_ln"]["stream_growth_at_largest_depth"]
                < 0.5 * h["sqrt_of_blocks_plus_one_at_largest_depth"]
            ),
        ),
    ),
    (
        "07_transformers",
        "placement_warmup",
        headline_claim(
            "In the default run Post-LN without warm-up fails at the larger rate in every seed",
            lambda h: all_fail(warmup_runs(h)["larger"]["post_ln_no_warmup"]),
        ),
    ),
    (
        "07_transformers",
        "placement_warmup",
        headline_claim(
            "The same model with a warm-up trains there, and Pre-LN trains with or without one. "
            "At the smaller rate every combination trains",
            lambda h: (
                none_fail(warmup_runs(h)["larger"]["post_ln_warmup"])
                and none_fail(warmup_runs(h)["larger"]["pre_ln_warmup"])
                and none_fail(warmup_runs(h)["larger"]["pre_ln_no_warmup"])
                and all(none_fail(runs) for runs in warmup_runs(h)["smaller"].values())
            ),
        ),
    ),
    (
        "07_transformers",
        "lm_norms",
        headline_claim(
            "In the default run the four methods end within a few hundredths of a nat of each "
            "other at their chosen rates, no normalization included",
            lambda h: h["none"]["final_loss_range_over_methods"] < 0.05,
        ),
    ),
    (
        "07_transformers",
        "lm_norms",
        headline_claim(
            "BatchNorm's two modes give nearly the same validation loss here",
            lambda h: abs(h["none"]["batch_train_minus_eval_mode_loss"]) < 0.05,
        ),
    ),
    (
        "07_transformers",
        "lm_norms",
        headline_claim(
            "In the default run it does not: the two are of the same size.",
            lambda h: all(
                0.5 < h["none"][f"fluctuation_{stat}_text_over_images"] < 2
                for stat in ("mean", "var")
            ),
        ),
    ),
    (
        "07_transformers",
        "lm_batch_composition",
        headline_claim(
            "In the default run both hold, and the bucketing effect is the larger of the two.",
            lambda h: (
                h["unmasked_over_masked_random_fluctuation"] > 1
                and h["masked_bucketed_over_random_fluctuation"]
                > h["unmasked_over_masked_random_fluctuation"]
            ),
        ),
    ),
    (
        "07_transformers",
        "lm_batch_composition",
        headline_claim(
            "bucketing hurts every method, LayerNorm too",
            lambda h: all(
                h[f"{m}_bucketed"]["median_final_validation_loss"]
                > h[f"{m}_random"]["median_final_validation_loss"]
                for m in ("batch", "batch_masked", "layer")
            ),
        ),
    ),
    (
        "07_transformers",
        "lm_batch_composition",
        headline_claim(
            "counting the padding does not make BatchNorm's loss worse at this scale",
            lambda h: all(
                h[f"batch_{b}"]["median_final_validation_loss"]
                <= h[f"batch_masked_{b}"]["median_final_validation_loss"]
                for b in ("random", "bucketed")
            ),
        ),
    ),
    (
        "02_batch_size",
        "statistics_batch",
        headline_claim(
            "ghost batches (per-device BatchNorm) of two samples hurt the MLP inside an SGD batch "
            "of 32 as much as a batch of two does",
            mlp_statistics_carry_the_damage,
        ),
    ),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "held in the default runs only against BatchNorm with per-time-step statistics",
            lambda h: (
                all(
                    h[model]["verdict"][f"{norm}_vs_batch"] != "loses less"
                    for model in ("stationary", "drifting")
                    for norm in ("layer", "rms")
                )
                and drift_verdicts("drifting", "batch_per_step", "loses less")(h)
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "train_eval_gap",
        headline_claim(
            "For the digits MLP of section 4 the train/eval gap is largest at small batches and "
            "eval mode is ahead",
            lambda h: (
                h["largest_eval_train_gap_at_batch_size"]
                == min(map(int, h["eval_minus_train_mode_points"]))
                and all(gap >= 0 for gap in h["eval_minus_train_mode_points"].values())
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "precise_bn",
        headline_claim(
            "precise BN, with the weights fixed, repairs them from a few hundred images here",
            lambda h: 100 <= h["precise_samples_needed"] < 1000,
        ),
    ),
    (
        "07_transformers",
        "lm_norms",
        headline_claim(
            "the kind of norm matters little for the loss at this scale (line 3: final losses "
            "within a few hundredths of a nat)",
            lambda h: h["none"]["final_loss_range_over_methods"] < 0.05,
        ),
    ),
    (
        "07_transformers",
        "lm_batch_composition",
        lambda r: holds(
            "under random batching its two seeds lie on either side of the masked ones",
            seeds_on_either_side(r["final_validation_loss"], "random"),
        ),
    ),
    (
        "03_sequence_length",
        "length_drift",
        headline_claim(
            "the position feature makes the first norm's input grow with position for every method",
            lambda h: (
                min(h["drifting"]["first_norm_input_rms_growth_to_longest_bin"].values()) > 1.5
                and max(h["stationary"]["first_norm_input_rms_growth_to_longest_bin"].values())
                < 1.1
            ),
        ),
    ),
    (
        "04_training_vs_inference",
        "train_eval_gap",
        lambda r: holds(
            "On the right, train-mode accuracy climbs with the size of the *test* batch towards "
            "the eval-mode line (in the default run",
            train_mode_climbs_to_eval(r),
        ),
    ),
]
# In the order of the notebooks (entries of one notebook keep their order).
PINNED.sort(key=lambda entry: entry[0])


def cell_with(stem: str, text: str) -> str | None:
    return next((cell for cell in markdown_cells(stem) if folded(text) in cell), None)


@pytest.mark.parametrize(
    ("notebook", "name", "rendered"),
    PINNED,
    ids=[f"{notebook[:2]}-{name}-{i}" for i, (notebook, name, _) in enumerate(PINNED)],
)
def test_notebook_says_what_the_default_run_shows(notebook, name, rendered):
    sentence = rendered(results(name))
    assert not sentence.startswith(FALSE), (
        f"notebooks/{notebook}.ipynb: no longer true of figures/{name}.json, rewrite "
        f"{sentence[len(FALSE) :]!r}"
    )
    cell = cell_with(notebook, sentence)
    assert cell is not None, f"notebooks/{notebook}.ipynb should say: {sentence!r}"
    assert "default run" in cell.lower(), (
        f"notebooks/{notebook}.ipynb: the cell saying {sentence!r} does not say it describes "
        "the default run"
    )
