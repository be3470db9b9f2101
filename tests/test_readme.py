"""The README: its usage examples run as written, and every number it quotes is a computed one.

The figure sections quote headline numbers of the experiments. Each quoted number is listed
here with where it comes from (``figures/<name>.json``, written by ``make figures``), so the
README cannot drift from the results committed beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from normlab import experiments

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURES = ROOT / "figures"


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


def headline(name: str) -> dict:
    return json.loads((FIGURES / f"{name}.json").read_text(encoding="utf-8"))["headline"]


def at(path: str):
    """A getter for a slash-separated path into a headline dict ("momentum_0.1/final_...")."""

    def get(values: dict):
        for key in path.split("/"):
            values = values[key]
        return values

    return get


def largest_drop_of_batch_free_norms(values: dict) -> float:
    per_method = values["per_method"]
    drops = [
        per_method[m]["drop_from_best_to_smallest_batch_points"] for m in ("layer", "rms", "group")
    ]
    return max(drops)


def minus_sign(text: str) -> str:
    """``text`` with the minus sign the README prints (−) for each hyphen-minus."""
    return text.replace("-", "−")


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
    (
        "accuracy_vs_batch_size",
        at("per_method/batch/median_test_accuracy_percent_at_smallest_batch"),
        "BatchNorm reaches {:.1f} % at B = 2".format,
    ),
    (
        "accuracy_vs_batch_size",
        at("per_method/batch/best_median_test_accuracy_percent"),
        "({:.1f} % at".format,
    ),
    (
        "accuracy_vs_batch_size",
        at("batch_within_1_point_of_layer_from_batch_size"),
        "from B = {} on".format,
    ),
    ("accuracy_vs_batch_size", largest_drop_of_batch_free_norms, "at most\n{:.1f} points".format),
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


@pytest.mark.parametrize(
    ("name", "value_of", "rendered"),
    QUOTED,
    ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(QUOTED)],
)
def test_readme_quotes_the_committed_results(name, value_of, rendered):
    text = README.read_text(encoding="utf-8")
    quoted = rendered(value_of(headline(name)))
    # Line breaks in the README are free: compare with runs of white space folded.
    assert " ".join(quoted.split()) in " ".join(text.split()), f"README should say: {quoted!r}"
