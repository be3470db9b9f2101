"""learning_rate_maps in quick mode: BatchNorm trains where no normalization cannot.

The quick map (shallow MLP, none and BatchNorm, three learning rates, two init scales)
is enough for the two qualitative results at the top; the rest checks that the stable
ranges, best learning rates and chosen points follow their definitions, at any size.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import learning_rate_maps


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(learning_rate_maps.NAME)


def test_batchnorm_trains_at_learning_rates_where_no_normalization_fails(results):
    for model in results["models"]:
        none, batch = (results["stable_range"][model][norm] for norm in ("none", "batch"))
        assert batch is not None
        assert none is None or batch["high"] > none["high"]
        at_high_lr = results["comparisons"][model]["batch"]["test_accuracy_at_high_lr"]
        assert at_high_lr["verdict"] == "better"
        assert at_high_lr["interval"][0] > 0.1  # more than 10 points, on the test set


def test_batchnorm_trains_from_small_initial_weights_where_no_normalization_cannot(results):
    smallest = results["init_scales"].index(min(results["init_scales"]))
    for model in results["models"]:
        maps = results["map"][model]
        assert any(maps["batch"]["trains"][smallest])
        assert not any(maps["none"]["trains"][smallest])


def test_trains_best_learning_rate_and_stable_range_follow_their_definitions(results):
    config = results["config"]
    learning_rates = results["learning_rates"]
    default = results["init_scales"].index(learning_rate_maps.DEFAULT_INIT_SCALE)
    for model in results["models"]:
        accuracy = {
            n: np.asarray(results["map"][model][n]["validation_accuracy"]) for n in results["norms"]
        }
        best_cell = max(100 * np.median(values, axis=-1).max() for values in accuracy.values())
        threshold = best_cell - config["tolerance_points"]
        assert results["threshold_percent"][model] == pytest.approx(threshold)
        for norm, values in accuracy.items():
            reaches = np.all(100 * values >= threshold, axis=-1)  # (scales, learning rates)
            trains = np.asarray(results["map"][model][norm]["trains"])
            assert np.all(reaches[trains])  # a framed cell reaches it in every map seed
            medians = np.median(values[default], axis=-1)  # (learning rates,)
            best = results["best_lr"][model][norm]
            assert medians[learning_rates.index(best)] == medians.max()  # chosen on validation
            stable = results["stable_range"][model][norm]
            if stable is not None:
                inside = [learning_rates.index(stable["low"]), learning_rates.index(stable["high"])]
                assert inside[0] <= learning_rates.index(best) <= inside[1]
                assert all(trains[default, inside[0] : inside[1] + 1])
                assert stable["decades"] == pytest.approx(np.log10(stable["high"] / stable["low"]))


def test_the_map_is_measured_on_validation_images_and_the_chosen_points_on_the_test_set(
    quick_runs, results
):
    records = quick_runs.records(learning_rate_maps.NAME)
    cells = [r["result"] for r in records if r["function"].endswith("measure_cell")]
    assert cells and all(float(270 * cell["validation_accuracy"]).is_integer() for cell in cells)
    for point in results["points"]:
        assert all(len(correct) == 450 for correct in point["test_correct"])
        assert len(point["test_accuracy"]) == len(results["config"]["seeds"]) >= 3


def test_every_method_gets_a_loss_curve_at_its_own_best_learning_rate(results):
    config = results["config"]
    for model in results["models"]:
        for norm in results["norms"]:
            point = learning_rate_maps.point_at(results, model, norm, "best")
            assert point["lr"] == results["best_lr"][model][norm]
            for curve in point["loss_curve"]:
                assert len(curve) == config["steps"] // config["curve_window"]
                assert curve[-1] < curve[0]  # the loss fell


def test_summary_has_a_row_per_network_and_method(results):
    rows = learning_rate_maps.summary(results).splitlines()[1:]
    assert len(rows) == len(results["models"]) * len(results["norms"])


def test_compared_names_each_comparison_and_leaves_out_the_missing_ones(results):
    pairs = learning_rate_maps.compared(results, "test_accuracy_at_best_lr")
    expected = [(m, n) for m in results["models"] for n in results["norms"] if n != "none"]
    assert [tuple(label.split(",")[0:2]) for label, _ in pairs] == [
        (model, f" {norm} vs none") for model, norm in expected
    ]
    assert all(comparison["resampled"] == "seeds and test examples" for _, comparison in pairs)
