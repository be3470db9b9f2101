"""The README: its usage examples run as written, and every number it quotes is a computed one.

The figure sections quote headline numbers of the experiments. Each quoted number is listed
here with where it comes from (``figures/<name>.json``, written by ``make figures``), so the
README cannot drift from the results committed beside it.
"""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from committed_results import (
    FIGURES,
    ROOT,
    at,
    folded,
    headline,
    minus_sign,
    signed,
    unsigned_minus,
)

from normlab import experiments

README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_examples_run_and_print_what_their_comments_say():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "the README has no python example"
    for block in blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
        # Each `print(...)  # expected` line: the comment starts with what was printed.
        expected = [
            line.split("#", 1)[1].strip().split(":")[0]
            for line in block.splitlines()
            if line.startswith("print(") and "#" in line
        ]
        assert printed.getvalue().splitlines() == expected


def largest_drop_of_batch_free_norms(values: dict) -> float:
    per_method = values["per_method"]
    drops = [
        per_method[m]["drop_from_best_to_smallest_batch_points"] for m in ("layer", "rms", "group")
    ]
    return max(drops)


def paired(model_or_method: str | None, setting: str | None, size: str, interval_key: str):
    """``−2.0 [−3.2, −0.9]``: a paired difference and its interval from a headline."""

    def render(values: dict) -> str:
        if model_or_method is None:  # accuracy_vs_batch_size: BatchNorm − LayerNorm
            mean = -values["layer_minus_batch_points"][size]
            low, high = values[interval_key][size]
        else:
            mean = values[model_or_method]["difference_to_reference_points"][setting][size]
            low, high = values[model_or_method][interval_key][setting][size]
        return f"{unsigned_minus(mean)} [{signed(low)}, {signed(high)}]".replace("[+", "[")

    return render


def first_size_never_worse(values: dict) -> str:
    verdicts = values["batch_minus_layer_verdict"]
    sizes = sorted(verdicts, key=int)
    start = None
    for size in reversed(sizes):
        if verdicts[size] == "worse":
            break
        start = size
    return f"from B = {start} on no interval lies below 0"


def batch_norm_lowest_at_every_size(values: dict) -> bool:
    methods = [
        key
        for key in values
        if isinstance(values[key], dict) and "base_learning_rate" in values[key]
    ]
    sizes = values["batch"]["mean_test_error_percent"]
    return all(
        values["batch"]["mean_test_error_percent"][size]
        == min(values[m]["mean_test_error_percent"][size] for m in methods)
        for size in sizes
    )


def zero_means(text: str):
    """Render ``text`` if the value is exactly 0, else something the README does not contain."""
    return lambda value: text if value == 0 else f"<{value} is not 0>"


LANDSCAPE_MEASURES = ("loss_variation", "gradient_change", "beta_smoothness")

#: (experiment, getter of the headline value, how the README writes it)
QUOTED = [
    ("norm_axes", at("rms_max_abs_group_mean_of_output"), "mean of up to {:.2f}".format),
    ("batch_stat_noise", at("gaussian/mean_ratio_to_theory_average"), "{:.3f} for Gaussian".format),
    ("batch_stat_noise", at("digits_relu/mean_ratio_to_theory_average"), "{:.3f} for\nreal".format),
    ("batch_stat_noise", at("digits_relu/mean_kurtosis"), "kurtosis {:.1f}".format),
    (
        "batch_stat_noise",
        at("digits_relu/var_ratio_to_gaussian_theory_at_largest_B"),
        "\n{:.2f}×".format,
    ),
    ("batch_coupling", at("x0_at_percentile_50/batch_norm_spread_at_B2"), "by\n{:.2f} (std".format),
    (
        "batch_coupling",
        at("x0_at_percentile_50/batch_norm_spread_at_B256"),
        "and {:.2g} at B = 256".format,
    ),
    (
        "batch_coupling",
        at("layer_max_abs_change_over_all_draws"),
        zero_means("change by\nexactly 0"),
    ),
    (
        "batch_coupling",
        at("jacobian_batch_train_max_off_diagonal_block_norm"),
        "up to {:.2f} in".format,
    ),
    (
        "batch_coupling",
        at("jacobian_batch_eval_max_off_diagonal_block_norm"),
        zero_means("exactly 0 in eval"),
    ),
    ("norm_axes", at("group_size_image_batch"), "N·H·W = {} values".format),
    ("norm_axes", at("group_size_image_layer"), "over C·H·W = {},".format),
    ("norm_axes", at("group_size_image_instance"), "over H·W = {} and".format),
    ("norm_axes", at("group_size_image_group"), "over H·W·C/G = {},".format),
    ("norm_axes", at("group_size_image_layer_channels"), "normalizes the C = {} channels".format),
    ("batch_stat_noise", at("positions/values_per_image"), "B images × {} positions".format),
    (
        "batch_stat_noise",
        at("positions/mean_ratio_to_iid_formula_average"),
        "mean spreads {:.2f}×".format,
    ),
    (
        "batch_stat_noise",
        at("positions/var_ratio_to_iid_formula_average"),
        "variance {:.2f}× as much".format,
    ),
    (
        "batch_stat_noise",
        at("positions/mean_worth_values_per_image"),
        "worth {:.0f} values for the mean".format,
    ),
    (
        "batch_stat_noise",
        at("positions/var_worth_values_per_image"),
        "and {:.0f} for the variance".format,
    ),
    (
        "batch_stat_noise",
        at("positions/mean_ratio_to_image_formula_average"),
        "(measured/theory {:.3f})".format,
    ),
    (
        "accuracy_vs_batch_size",
        at("per_method/batch/median_test_accuracy_percent_at_smallest_batch"),
        "BatchNorm reaches {:.1f} % at B = 2".format,
    ),
    (
        "accuracy_vs_batch_size",
        at("per_method/batch/best_median_test_accuracy_percent"),
        "(median; {:.1f} % at its best".format,
    ),
    (
        "accuracy_vs_batch_size",
        paired(None, None, "2", "batch_minus_layer_interval_points"),
        "it is {} points at B = 2".format,
    ),
    (
        "accuracy_vs_batch_size",
        paired(None, None, "4", "batch_minus_layer_interval_points"),
        "B = 4 ({})".format,
    ),
    (
        "accuracy_vs_batch_size",
        paired(None, None, "8", "batch_minus_layer_interval_points"),
        "B = 8 ({})".format,
    ),
    ("accuracy_vs_batch_size", first_size_never_worse, "{}".format),
    (
        "accuracy_vs_batch_size",
        lambda values: values["batch_minus_layer_verdict"]["128"] == "better",
        lambda ahead: "(at B = 128 BatchNorm is ahead)" if ahead else "<not ahead at 128>",
    ),
    (
        "accuracy_vs_batch_size",
        at("batch_as_good_as_layer_from_batch_size"),
        lambda start: "none is narrow enough" if start is None else f"<as good as from {start}>",
    ),
    ("accuracy_vs_batch_size", largest_drop_of_batch_free_norms, "at most {:.1f} points".format),
    (
        "accuracy_vs_batch_size",
        lambda values: all(
            verdict != "worse"
            for size, verdict in values["minus_layer_verdict"]["none"].items()
            if int(size) >= 4
        ),
        lambda fine: "not worse than LayerNorm from B = 4 on" if fine else "<worse somewhere>",
    ),
    (
        "accuracy_vs_batch_size",
        at("per_method/none/worst_seed_test_accuracy_percent_at_smallest_batch"),
        "worst seed reaches {:.1f} %".format,
    ),
    ("statistics_batch", at("sgd_batch_size"), "fixed SGD batch B = {}".format),
    (
        "statistics_batch",
        paired("mlp", "inside_fixed_batch", "2", "interval_points"),
        "costs {} points against g = B".format,
    ),
    (
        "statistics_batch",
        paired("mlp", "small_sgd_batch", "2", "interval_points"),
        "lr·g/B) {}".format,
    ),
    (
        "statistics_batch",
        paired("cnn", "inside_fixed_batch", "2", "interval_points"),
        "loses {} at g = 2".format,
    ),
    (
        "statistics_batch",
        paired("cnn", "inside_fixed_batch", "4", "interval_points"),
        "and {} at g = 4".format,
    ),
    (
        "statistics_batch",
        paired("cnn", "small_sgd_batch", "2", "interval_points"),
        "no more ({} at B = 2)".format,
    ),
    *[
        (
            "group_norm_curve",
            at(f"{method}/base_learning_rate"),
            f"{label} {{:g}}".format,
        )
        for method, label in (
            ("batch", "(BatchNorm"),
            ("group", "GroupNorm"),
            ("layer", "LayerNorm"),
            ("instance", "InstanceNorm"),
            ("none", "none"),
        )
    ],
    (
        "group_norm_curve",
        at("batch/mean_test_error_percent/2"),
        "error is {:.2f} % at N = 2".format,
    ),
    (
        "group_norm_curve",
        at("batch/mean_test_error_percent/32"),
        "and {:.2f} % at N = 32".format,
    ),
    (
        "group_norm_curve",
        lambda values: (
            f"{unsigned_minus(values['batch']['rise_from_largest_to_smallest_points'], 2)} points "
            f"[{signed(values['batch']['rise_interval_points'][0], 2)}, "
            f"{signed(values['batch']['rise_interval_points'][1], 2)}]"
        ),
        "(difference {})".format,
    ),
    (
        "group_norm_curve",
        batch_norm_lowest_at_every_size,
        lambda lowest: "the lowest of the five at every N" if lowest else "<not the lowest>",
    ),
    (
        "group_norm_curve",
        at("group/mean_test_error_percent/32"),
        "GroupNorm ({:.2f} % at N = 32)".format,
    ),
    ("group_norm_curve", at("layer/mean_test_error_percent/32"), "LayerNorm ({:.2f} %)".format),
    ("group_norm_curve", at("steps/32"), "are only {} steps".format),
    ("train_eval_gap", at("eval_minus_train_mode_points/2"), "costs {:.1f} points at B = 2".format),
    ("train_eval_gap", at("eval_minus_train_mode_points/128"), zero_means("nothing at B = 128")),
    ("train_eval_gap", at("precise_bn_minus_eval_points/2"), "adds {:.1f} points at B = 2".format),
    (
        "train_eval_gap",
        lambda values: max(
            v for b, v in values["precise_bn_minus_eval_points"].items() if b != "2"
        ),
        "at most {:.1f} elsewhere".format,
    ),
    ("train_eval_gap", at("batch_of_one_changed_predictions_total"), "({} changed)".format),
    ("running_stats", at("momentum_0.01/final_std_of_running_mean_in_sigma"), "is {:.3f}σ,".format),
    ("running_stats", at("momentum_0.1/final_std_of_running_mean_in_sigma"), " {:.3f}σ and".format),
    ("running_stats", at("momentum_0.5/final_std_of_running_mean_in_sigma"), " {:.3f}σ for".format),
    (
        "running_stats",
        at("momentum_0.01/theory_std_of_running_mean_in_sigma"),
        "(theory {:.3f}σ,".format,
    ),
    ("running_stats", at("momentum_0.1/theory_std_of_running_mean_in_sigma"), " {:.3f}σ, ".format),
    ("running_stats", at("momentum_0.5/theory_std_of_running_mean_in_sigma"), " {:.3f}σ)".format),
    (
        "running_stats",
        at("momentum_None/final_std_of_running_mean_in_sigma"),
        "and {:.3f}σ for the".format,
    ),
    ("running_stats", at("cumulative_unbiased_running_var_over_true_var"), "to {:.3f} of".format),
    ("running_stats", at("cumulative_biased_alternative_over_true_var"), "give {:.3f}.".format),
    ("precise_bn", at("probe_step"), "{} steps into training".format),
    (
        "precise_bn",
        at("per_momentum/0.01/precise_minus_eval_points"),
        "fixed (precise BN) gains {:.2f}\npoints".format,
    ),
    (
        "precise_bn",
        lambda values: values["per_momentum"]["0.01"]["precise_minus_eval_interval_points"],
        lambda interval: "(Keras' 0.99; 95 % interval {:.2f} to {:.2f})".format(*interval),
    ),
    ("precise_bn", at("per_momentum/0.1/precise_minus_eval_points"), "and {:.2f}\nover".format),
    (
        "precise_bn",
        lambda values: values["per_momentum"]["0.1"]["precise_minus_eval_interval_points"],
        lambda interval: "(interval {:.2f} to {:.2f})".format(*interval).replace("-", "−"),
    ),
    ("precise_bn", at("precise_samples_needed"), "Precise BN from {} images is within".format),
    (
        "test_time_shift",
        at("median_accuracy_percent/mlp/batch/contrast/0.25"),
        "training statistics at {:.1f} % in the MLP".format,
    ),
    (
        "test_time_shift",
        at("median_accuracy_percent/cnn/batch/contrast/0.25"),
        "and {:.1f} % in the CNN".format,
    ),
    (
        "test_time_shift",
        lambda values: [
            values["median_accuracy_percent"][model]["batch_adabn"]["contrast"]["0.25"]
            for model in ("mlp", "cnn")
        ],
        lambda pair: "labels) give {:.1f} % and {:.1f} %".format(*pair),
    ),
    (
        "test_time_shift",
        at("adabn_affine_shift_accuracy_range_points/mlp"),
        "(range {:.1f} points)".format,
    ),
    (
        "test_time_shift",
        at("median_accuracy_percent/mlp/layer/contrast/0.25"),
        "LayerNorm keeps {:.1f} % in the MLP".format,
    ),
    (
        "test_time_shift",
        lambda values: [
            values["median_accuracy_percent"]["cnn"][norm]["contrast"]["0.25"]
            for norm in ("layer", "group")
        ],
        lambda pair: "GroupNorm keep {:.1f} % and {:.1f} % in the CNN".format(*pair),
    ),
    (
        "test_time_shift",
        lambda values: [
            f(
                by_method["noise"]["1.5"]
                for by_method in values["median_accuracy_percent"][model].values()
            )
            for model in ("mlp", "cnn")
            for f in (min, max)
        ],
        lambda ranges: "(MLP {:.1f}–{:.1f} %, CNN {:.1f}–{:.1f} %)".format(*ranges),
    ),
    (
        "frozen_batchnorm",
        at("median_test_accuracy_percent/train/2"),
        "in train mode it reaches {:.1f} %".format,
    ),
    (
        "frozen_batchnorm",
        at("median_test_accuracy_percent/frozen/2"),
        "still learning) {:.1f} %".format,
    ),
    (
        "frozen_batchnorm",
        at("frozen_minus_train_points_at_smallest"),
        "a paired difference of {:.1f}\npoints".format,
    ),
    (
        "frozen_batchnorm",
        at("frozen_minus_train_interval_at_smallest"),
        lambda interval: "(95 % interval {:.1f} to {:.1f})".format(*interval),
    ),
    (
        "frozen_batchnorm",
        lambda values: [
            values["frozen_minus_train_points_at_largest"],
            *values["frozen_minus_train_interval_at_largest"],
        ],
        lambda numbers: "(frozen − train {:.1f} points, interval {:.1f} to {:.1f})".format(
            *numbers
        ).replace("-", "−"),
    ),
    (
        "frozen_batchnorm",
        at("recomputed_minus_frozen_median_points/2"),
        "changes the median by {:.1f} points at B = 2".format,
    ),
    (
        "batch_renorm",
        at("median_eval_accuracy_percent/batch_renorm/2"),
        "Batch Renorm reaches {:.1f} %".format,
    ),
    ("batch_renorm", at("median_eval_accuracy_percent/batch/2"), "BatchNorm's\n{:.1f} %".format),
    (
        "batch_renorm",
        lambda values: [
            values["renorm_minus_batch_points_at_smallest"],
            *values["renorm_minus_batch_interval_at_smallest"],
        ],
        lambda numbers: "(paired difference {:.1f} points, 95 % interval {:.1f} to {:.1f})".format(
            *numbers
        ),
    ),
    (
        "batch_renorm",
        at("median_eval_accuracy_percent/group/2"),
        "GroupNorm's {:.1f} %".format,
    ),
    (
        "batch_renorm",
        at("median_train_eval_gap_points/batch_renorm/2"),
        "train/eval gap at B = 2 is {:.1f} points".format,
    ),
    (
        "batch_renorm",
        at("median_train_eval_gap_points/batch/2"),
        "against BatchNorm's {:.1f},".format,
    ),
    (
        "batch_renorm",
        at("median_clipped_share_percent/r/2"),
        "r is at its limit for {:.0f} %".format,
    ),
    (
        "padding_stats",
        at("unmasked_mean_error_at_largest_fraction_median"),
        "by {:.2f} feature".format,
    ),
    ("padding_stats", at("masked_var_error_worst"), "(at most {:.1e})".format),
    ("padding_stats", at("layer_pad_values_max_abs_diff"), zero_means("(difference 0.0)")),
    ("padding_stats", at("rms_pad_values_max_abs_diff"), zero_means("(difference 0.0)")),
    ("causal_leak", at("heatmap_batchnorm_future_max_block_norm"), "(up to {:.3f}".format),
    (
        "causal_leak",
        at("heatmap_batchnorm_diagonal_mean_block_norm"),
        "against {:.2f} on it)".format,
    ),
    ("causal_leak", at("batchnorm_future_total_slope_vs_seq_len"), "T^{:.2f}".format),
    (
        "causal_leak",
        lambda values: -values["batchnorm_future_total_slope_vs_batch_size"],
        "N^−{:.2f}".format,
    ),
    (
        "causal_leak",
        at("off_diagonal_max_layer_rms_batch_eval_all_runs"),
        zero_means("have exactly 0 there"),
    ),
    (
        "causal_leak",
        at("instance_over_batchnorm_future_total_at_longest_seq_len"),
        "InstanceNorm {:.2f}× as much".format,
    ),
    (
        "length_generalization",
        lambda values: values["causal_largest_median_accuracy_drop_shortest_to_longest"] <= 0,
        lambda no_drop: "(no median drops" if no_drop else "<a median drops>",
    ),
    (
        "length_generalization",
        at("causal_batch_running_stats_std_ratio_median"),
        "std {:.2f},".format,
    ),
    ("length_generalization", at("causal_unmasked_std_ratio_theory"), "theory {:.2f})".format),
    ("length_drift", at("train_len"), "sequences of {} tokens".format),
    ("length_drift", at("test_len"), "tested on {} tokens".format),
    (
        "length_drift",
        at("drifting/batch_per_step/drop_points"),
        "per-time-step statistics {:.1f} points".format,
    ),
    ("length_drift", at("drifting/batch/drop_points"), "over time {:.1f},".format),
    ("length_drift", at("drifting/layer/drop_points"), "LayerNorm {:.1f},".format),
    ("length_drift", at("drifting/rms/drop_points"), "RMSNorm {:.1f}.".format),
    (
        "length_drift",
        lambda values: (
            values["drifting"]["verdict"]["layer_vs_batch"],
            values["drifting"]["verdict"]["layer_vs_batch_per_step"],
        ),
        lambda verdicts: (
            "LayerNorm loses about as much as pooled BatchNorm"
            if verdicts == ("about as much", "loses less")
            else f"<verdicts {verdicts}>"
        ),
    ),
    (
        "length_drift",
        lambda values: (
            max(
                entry["drop_points"]
                for entry in values["stationary"].values()
                if isinstance(entry, dict) and "drop_points" in entry
            )
            < 2
        ),
        lambda small: "no method loses accuracy" if small else "<a method loses accuracy>",
    ),
    (
        "placement_gradients",
        at("post_ln/last_layer_slope_vs_depth"),
        "(log-log slope {:+.2f} for Post-LN,".format,
    ),
    ("placement_gradients", at("pre_ln/last_layer_slope_vs_depth"), "{:.2f} for Pre-LN,".format),
    (
        "placement_gradients",
        at("post_ln/last_layer_gradient_norm/12"),
        "larger one ({:.3f} against".format,
    ),
    ("placement_gradients", at("pre_ln/last_layer_gradient_norm/12"), " {:.3f} at L = 12)".format),
    (
        "placement_gradients",
        at("pre_ln/stream_growth_at_largest_depth"),
        "grows only {:.2f}× over".format,
    ),
    ("placement_gradients", at("largest_depth"), "over {} blocks".format),
    (
        "placement_gradients",
        at("sqrt_of_blocks_plus_one_at_largest_depth"),
        "√(L + 1) = {:.2f} if".format,
    ),
    ("placement_warmup", at("num_layers"), "With {} blocks and Adam".format),
    (
        "placement_warmup",
        lambda values: sum(entry["failed_runs"] for entry in values["lr_0.003"].values()),
        zero_means("at lr 0.003 every combination trains"),
    ),
    (
        "placement_warmup",
        lambda values: (
            values["lr_0.01"]["post_ln_no_warmup"]["failed_runs"],
            values["lr_0.01"]["post_ln_no_warmup"]["runs"],
        ),
        lambda counts: "without warm-up fails in {} of {} seeds".format(*counts),
    ),
    (
        "placement_warmup",
        at("lr_0.01/post_ln_no_warmup/median_final_validation_loss"),
        "(final validation loss {:.3f},".format,
    ),
    ("placement_warmup", at("unigram_baseline"), "unigram baseline {:.2f})".format),
    (
        "placement_warmup",
        at("lr_0.01/post_ln_warmup/median_final_validation_loss"),
        "warm-up reaches {:.3f}".format,
    ),
    (
        "placement_warmup",
        at("lr_0.01/pre_ln_no_warmup/median_final_validation_loss"),
        "and Pre-LN {:.3f} without it".format,
    ),
    (
        "placement_warmup",
        lambda values: sum(
            entry["failed_runs"]
            for key, entry in values["lr_0.01"].items()
            if key != "post_ln_no_warmup"
        ),
        zero_means("Post-LN with warm-up reaches"),
    ),
    ("lm_norms", at("none/final_loss_range_over_methods"), "within {:.3f} nats".format),
    ("lm_norms", at("none/layer/median_final_validation_loss"), "(LayerNorm {:.3f},".format),
    ("lm_norms", at("none/rms/median_final_validation_loss"), "RMSNorm {:.3f},".format),
    ("lm_norms", at("none/batch/median_final_validation_loss"), "BatchNorm {:.3f},".format),
    ("lm_norms", at("none/none/median_final_validation_loss"), "none {:.3f})".format),
    ("lm_norms", at("test_length_over_training_length"), "contexts {:.0f}× longer".format),
    ("lm_norms", at("none/batch/rise_to_longest_bin"), "rises by {:.3f} nats".format),
    ("lm_norms", at("none/layer/rise_to_longest_bin"), "against {:.3f} for LayerNorm".format),
    (
        "lm_norms",
        lambda values: (
            values["none"]["batch"]["rise_to_longest_bin"]
            <= values["none"]["layer"]["rise_to_longest_bin"]
        ),
        lambda no_more: "does not favour LayerNorm" if no_more else "<favours LayerNorm>",
    ),
    ("lm_norms", at("none/batch_train_minus_eval_mode_loss"), "train mode costs {:+.4f}".format),
    (
        "lm_norms",
        at("none/fluctuation_mean_text_over_images"),
        "fluctuate {:.2f}× as much".format,
    ),
    (
        "lm_norms",
        lambda values: values["none"]["fluctuation_mean_text_over_images"] < 2,
        lambda small: "does not show at this" if small else "<shows>",
    ),
    (
        "lm_batch_composition",
        at("window_lengths"),
        lambda lengths: "Windows of {}–{} characters".format(*lengths),
    ),
    (
        "lm_batch_composition",
        lambda values: round(100 * values["padding_fraction"]["random"]),
        "at random ({} % padding)".format,
    ),
    (
        "lm_batch_composition",
        lambda values: round(100 * values["padding_fraction"]["bucketed"]),
        "by length ({} %)".format,
    ),
    (
        "lm_batch_composition",
        at("masked_bucketed_over_random_fluctuation"),
        "fluctuate {:.2f}× as much".format,
    ),
    (
        "lm_batch_composition",
        at("unmasked_over_masked_random_fluctuation"),
        "fluctuate {:.2f}× as much as the masked".format,
    ),
    (
        "lm_batch_composition",
        lambda values: all(
            values[f"{method}_bucketed"]["median_final_validation_loss"]
            > values[f"{method}_random"]["median_final_validation_loss"]
            for method in ("batch_masked", "batch", "layer")
        ),
        lambda worse: "costs every method loss" if worse else "<not every method>",
    ),
    (
        "rms_vs_layernorm",
        at("cells_matching_paper"),
        lambda cells: "All 18 cells" if cells == "18/18" else cells,
    ),
    ("rms_vs_layernorm", at("rms_vs_layer_zero_mean_worst"), "({:.1e} apart".format),
    ("rms_vs_layernorm", at("rms_vs_layer_at_ratio_1_median"), "differs by {:.3f}".format),
    ("rms_vs_layernorm", at("rms_reductions"), "counts {} reductions for RMSNorm".format),
    ("rms_vs_layernorm", at("layer_reductions"), "against {} for LayerNorm".format),
    (
        "variance_numerics",
        at("first_ratio_where_one_pass_float32_error_exceeds_1_percent"),
        "ratio of {:g} and".format,
    ),
    (
        "variance_numerics",
        at("one_pass_float32_median_error_at_largest_ratio"),
        "factor of {:.0f} at".format,
    ),
    ("variance_numerics", at("two_pass_float32_worst_median_error"), "within {:.1e}".format),
    (
        "learning_rate_maps",
        at("shallow_mlp/per_norm/batch/stable_lr_high"),
        "reaches up to\n{:g} for BatchNorm".format,
    ),
    (
        "learning_rate_maps",
        at("shallow_mlp/per_norm/none/stable_lr_high"),
        "against {:g} without".format,
    ),
    (
        "learning_rate_maps",
        lambda values: (
            values["shallow_mlp"]["per_norm"]["batch"]["stable_decades"],
            values["shallow_mlp"]["per_norm"]["none"]["stable_decades"],
        ),
        lambda pair: "({:.2f} against {:.2f} decades)".format(*pair),
    ),
    (
        "learning_rate_maps",
        at("deep_mlp/per_norm/batch/stable_lr_high"),
        "up to {:g} against".format,
    ),
    (
        "learning_rate_maps",
        at("deep_mlp/per_norm/none/stable_lr_high"),
        "against {:g} in the deep".format,
    ),
    (
        "learning_rate_maps",
        at("shallow_mlp/per_norm/none/test_accuracy_percent_at_high_lr"),
        "fall to {:.1f} % and".format,
    ),
    (
        "learning_rate_maps",
        at("deep_mlp/per_norm/none/test_accuracy_percent_at_high_lr"),
        "and {:.1f} % test accuracy".format,
    ),
    (
        "learning_rate_maps",
        lambda values: (
            values["cnn"]["per_norm"]["batch"]["stable_lr_high"],
            values["cnn"]["per_norm"]["none"]["stable_lr_high"],
        ),
        lambda pair: f"both stop at {pair[0]:g}" if pair[0] == pair[1] else "<CNN tops differ>",
    ),
    (
        "learning_rate_maps",
        lambda values: [
            values[model]["per_norm"][norm]["smallest_init_scale_that_trains"]
            for model, norm in (("shallow_mlp", "batch"), ("cnn", "batch"), ("deep_mlp", "batch"))
        ],
        lambda scales: (
            "scaled by {:g} in the shallow MLP and\nthe CNN (by {:g} in the deep MLP)".format(
                *scales[1:]
            )
            if scales[0] == scales[1]
            else "<shallow and CNN differ>"
        ),
    ),
    (
        "learning_rate_maps",
        lambda values: {
            values[model]["per_norm"]["none"]["smallest_init_scale_that_trains"] for model in values
        },
        lambda scales: "only at scale 1, He's own" if scales == {1.0} else f"<none: {scales}>",
    ),
    (
        "learning_rate_maps",
        at("shallow_mlp/per_norm/batch/test_accuracy_percent_at_best_lr"),
        "BatchNorm {:.1f} %,".format,
    ),
    (
        "learning_rate_maps",
        at("shallow_mlp/per_norm/none/test_accuracy_percent_at_best_lr"),
        "none {:.1f} %)".format,
    ),
    ("noisy_batchnorm", at("depth_2/noisy_over_none_shift"), "inputs {:.0f}× (2 hidden".format),
    ("noisy_batchnorm", at("depth_8/noisy_over_none_shift"), "and {:.0f}× (8 blocks)".format),
    (
        "noisy_batchnorm",
        lambda v: -v["depth_2"]["noisy_vs_batch_points"],
        "is {:.1f} points below".format,
    ),
    (
        "noisy_batchnorm",
        at("depth_2/noisy_vs_batch_interval_points"),
        lambda interval: minus_sign("(interval {:.1f} to {:+.1f};".format(*interval)),
    ),
    (
        "noisy_batchnorm",
        lambda v: -v["depth_8"]["noisy_vs_batch_points"],
        "but {:.1f} points".format,
    ),
    (
        "noisy_batchnorm",
        at("depth_8/noisy_vs_batch_interval_points"),
        lambda interval: minus_sign("({:.1f} to {:.1f})".format(*interval)),
    ),
    (
        "noisy_batchnorm",
        at("depth_8/mean_test_accuracy_percent"),
        lambda accuracy: "({noisy_batch:.1f} % against {none:.1f} %)".format(**accuracy),
    ),
    ("loss_landscape", at("depth_8/none_over_batch_loss_variation"), "varies {:.2f}×".format),
    ("loss_landscape", at("depth_8/none_over_batch_gradient_change"), "changes {:.2f}×".format),
    ("loss_landscape", at("depth_8/none_over_batch_beta_smoothness"), "is {:.2f}× as".format),
    (
        "loss_landscape",
        lambda v: max(v["depth_8"][f"none_over_batch_{key}"] for key in LANDSCAPE_MEASURES),
        lambda ratio: "by less than a factor of two" if 1 < ratio < 2 else f"<{ratio}>",
    ),
    (
        "loss_landscape",
        lambda v: [
            v["depth_2"][f"none_over_batch_{key}"]
            for key in ("loss_variation", "gradient_change", "beta_smoothness")
        ],
        lambda ratios: "({:.2f}×,\n{:.2f}×, {:.2f}×)".format(*ratios),
    ),
    (
        "loss_landscape",
        lambda v: [v["depth_2"]["per_norm"][n]["median_gradient_norm"] for n in ("batch", "none")],
        lambda norms: "({:.2f} against {:.2f})".format(*norms),
    ),
    (
        "effective_learning_rate",
        lambda v: max(
            v["check"][norm]["negligible_eps"][key]
            for norm in ("batch", "layer", "rms")
            for key in ("max_abs_cosine", "max_gradient_ratio_error")
        ),
        "at most {:.1e} once".format,
    ),
    (
        "effective_learning_rate",
        at("check/batch/default_eps/max_gradient_ratio_error"),
        "the second {:.1e} at".format,
    ),
    (
        "effective_learning_rate",
        at("check/none/negligible_eps/max_gradient_ratio_error"),
        "against {:.1f} without".format,
    ),
    ("effective_learning_rate", at("pythagoras_ratio_without_decay"), "(ratio {:.6f})".format),
    (
        "effective_learning_rate",
        lambda v: [v["dynamics"][label]["measured_over_theory"] for label in ("0.003", "0.01")],
        lambda ratios: "settles at {:.2f} and {:.2f} of".format(*ratios),
    ),
    (
        "effective_learning_rate",
        at("dynamics/0.001"),
        lambda entry: (
            "has not settled after 3000 steps ({:.2f} of it)".format(entry["measured_over_theory"])
            if not entry["equilibrated"]
            else "<0.001 settled>"
        ),
    ),
]


@pytest.mark.parametrize("name", experiments.names())
def test_every_figure_is_committed_and_shown_in_the_readme(name):
    for suffix in (".png", ".svg", ".json"):
        assert (FIGURES / f"{name}{suffix}").is_file(), (
            f"run `make figures`: no figures/{name}{suffix}"
        )
    assert f"(figures/{name}.png)" in README.read_text(encoding="utf-8")


def test_the_readme_shows_the_figures_in_the_order_of_the_lessons():
    # experiments.REGISTRY is the lessons' order, which the slide deck follows too
    sections = re.findall(r"^### `([a-z_]+)` — ", README.read_text(encoding="utf-8"), re.M)
    assert [name for name in sections if name in experiments.names()] == list(experiments.names())


@pytest.mark.parametrize(
    ("name", "value_of", "rendered"),
    QUOTED,
    ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(QUOTED)],
)
def test_readme_quotes_the_committed_results(name, value_of, rendered):
    text = README.read_text(encoding="utf-8")
    quoted = rendered(value_of(headline(name)))
    # Line breaks in the README are free: compare with runs of white space folded.
    assert folded(quoted) in folded(text), f"README should say: {quoted!r}"
