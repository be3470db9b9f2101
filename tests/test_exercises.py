"""The write-it-yourself checker: right code passes, each known mistake is named, others located.

The functions below are what a student might write: first the right answers (written
independently of :mod:`normlab.reference`), then each known mistake as the right function
with exactly that one change. Every key of :data:`normlab.exercises.MISTAKES` has a case.
"""

from __future__ import annotations

import doctest
import html
import itertools

import numpy as np
import pytest

from normlab import exercises
from normlab.gradcheck import relative_error

# ---------------------------------------------------------------------------
# The right answers, as a student writes them
# ---------------------------------------------------------------------------


def leading_axes(a):
    return tuple(range(a.ndim - 1))


def batchnorm_forward(x, gamma, beta, eps):
    axes = leading_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def three_terms(dxhat, xhat, rstd, axes):
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
    return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def batchnorm_backward(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    dx = three_terms(dy * gamma, xhat, rstd, axes)
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def running_update(running_mean, running_var, batch_mean, batch_var, n, momentum):
    unbiased = batch_var * n / (n - 1)
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * unbiased
    return new_mean, new_var


def batchnorm_eval_forward(x, running_mean, running_var, gamma, beta, eps):
    rstd = 1 / np.sqrt(running_var + eps)
    xhat = (x - running_mean) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def batchnorm_eval_backward(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    return dy * gamma * rstd, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def layernorm_forward(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def layernorm_backward(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    dx = three_terms(dy * gamma, xhat, rstd, -1)
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def rmsnorm_forward(x, gamma, eps):
    rstd = 1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    xhat = x * rstd
    return gamma * xhat, (xhat, rstd, gamma)


def rmsnorm_backward(dy, cache):
    xhat, rstd, gamma = cache
    dxhat = dy * gamma
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=leading_axes(dy))


def grouped(a, num_groups):
    """(N, ..., C) -> (N, positions, G, C/G), channel c in group c // (C/G)."""
    return a.reshape(a.shape[0], -1, num_groups, a.shape[-1] // num_groups)


def groupnorm_forward(x, num_groups, gamma, beta, eps):
    view = grouped(x, num_groups)
    mean = view.mean(axis=(1, 3), keepdims=True)
    var = view.var(axis=(1, 3), keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = ((view - mean) * rstd).reshape(x.shape)
    return gamma * xhat + beta, (xhat, rstd, gamma, num_groups)


def groupnorm_backward(dy, cache):
    xhat, rstd, gamma, num_groups = cache
    dxhat, xhat_view = grouped(dy * gamma, num_groups), grouped(xhat, num_groups)
    dx = three_terms(dxhat, xhat_view, rstd, (1, 3)).reshape(dy.shape)
    axes = leading_axes(dy)
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


RIGHT = {
    "batchnorm": (exercises.check_batchnorm, batchnorm_forward, batchnorm_backward),
    "running_update": (exercises.check_running_update, running_update),
    "batchnorm_eval": (
        exercises.check_batchnorm_eval,
        batchnorm_eval_forward,
        batchnorm_eval_backward,
    ),
    "layernorm": (exercises.check_layernorm, layernorm_forward, layernorm_backward),
    "rmsnorm": (exercises.check_rmsnorm, rmsnorm_forward, rmsnorm_backward),
    "groupnorm": (exercises.check_groupnorm, groupnorm_forward, groupnorm_backward),
}


def check_with(exercise: str, **replaced):
    """Run the check of ``exercise`` with the right functions, some replaced by name."""
    check, *functions = RIGHT[exercise]
    functions = [replaced.pop(function.__name__, function) for function in functions]
    assert not replaced, f"no function {sorted(replaced)} in {exercise}"
    return check(*functions)


# ---------------------------------------------------------------------------
# Each mistake, made once: the right function with one change
# ---------------------------------------------------------------------------


def bn_forward_unbiased(x, gamma, beta, eps):
    axes = leading_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=1)  # the mistake
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def bn_forward_over_features(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)  # the mistake, here and in the next line
    var = x.var(axis=-1, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma * xhat + beta, None


def bn_forward_first_axis_only(x, gamma, beta, eps):
    mean = x.mean(axis=0, keepdims=True)  # the mistake, here and in the next line
    var = x.var(axis=0, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma * xhat + beta, None


def bn_forward_eps_outside(x, gamma, beta, eps):
    axes = leading_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    xhat = (x - mean) / (x.std(axis=axes, keepdims=True) + eps)  # the mistake
    return gamma * xhat + beta, None


def bn_backward_missing_mean_term(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    dxhat = dy * gamma
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))  # the mistake
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def bn_backward_missing_variance_term(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    dxhat = dy * gamma
    dx = rstd * (dxhat - dxhat.mean(axis=axes, keepdims=True))  # the mistake
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def bn_backward_missing_both_terms(dy, cache):
    xhat, rstd, gamma = cache
    axes = leading_axes(dy)
    dx = rstd * dy * gamma  # the mistake
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def bn_backward_without_gamma(dy, cache):
    xhat, rstd, _ = cache
    axes = leading_axes(dy)
    dx = three_terms(dy, xhat, rstd, axes)  # the mistake: dy where dy * gamma belongs
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def bn_backward_params_first_axis(dy, cache):
    xhat, rstd, gamma = cache
    dx = three_terms(dy * gamma, xhat, rstd, leading_axes(dy))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)  # the mistake


def ln_backward_params_over_features(dy, cache):
    xhat, rstd, gamma = cache
    dx = three_terms(dy * gamma, xhat, rstd, -1)
    return dx, (dy * xhat).sum(axis=-1), dy.sum(axis=-1)  # the mistake


def running_update_biased(running_mean, running_var, batch_mean, batch_var, n, momentum):
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var  # the mistake: no n/(n-1)
    return new_mean, new_var


def running_update_keras(running_mean, running_var, batch_mean, batch_var, n, momentum):
    unbiased = batch_var * n / (n - 1)
    new_mean = momentum * running_mean + (1 - momentum) * batch_mean  # the mistake, here
    new_var = momentum * running_var + (1 - momentum) * unbiased  # and here
    return new_mean, new_var


def bn_eval_forward_batch_statistics(x, running_mean, running_var, gamma, beta, eps):
    return batchnorm_forward(x, gamma, beta, eps)  # the mistake: the training computation


def bn_eval_backward_through_statistics(dy, cache):
    return batchnorm_backward(dy, cache)  # the mistake: the training backward


def ln_forward_over_batch(x, gamma, beta, eps):
    axes = leading_axes(x)  # the mistake
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    return gamma * (x - mean) * rstd + beta, None


def ln_forward_whole_sample(x, gamma, beta, eps):
    axes = tuple(range(1, x.ndim))  # the mistake
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    return gamma * (x - mean) * rstd + beta, None


def rms_forward_over_batch(x, gamma, eps):
    rstd = 1 / np.sqrt((x * x).mean(axis=leading_axes(x), keepdims=True) + eps)  # the mistake
    return gamma * x * rstd, None


def rms_forward_centering(x, gamma, eps):
    centered = x - x.mean(axis=-1, keepdims=True)  # the mistake
    rstd = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    return gamma * centered * rstd, None


def rms_backward_mean_term(dy, cache):
    xhat, rstd, gamma = cache
    dx = three_terms(dy * gamma, xhat, rstd, -1)  # the mistake: LayerNorm's three terms
    return dx, (dy * xhat).sum(axis=leading_axes(dy))


def gn_forward_interleaved(x, num_groups, gamma, beta, eps):
    n, channels = x.shape[0], x.shape[-1]
    view = x.reshape(n, -1, channels // num_groups, num_groups)  # the mistake: (C/G, G)
    mean = view.mean(axis=(1, 2), keepdims=True)
    var = view.var(axis=(1, 2), keepdims=True)
    xhat = ((view - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * xhat + beta, None


def gn_forward_per_position(x, num_groups, gamma, beta, eps):
    view = grouped(x, num_groups)
    mean = view.mean(axis=3, keepdims=True)  # the mistake, here and in the next line
    var = view.var(axis=3, keepdims=True)
    xhat = ((view - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * xhat + beta, None


def gn_forward_per_channel(x, num_groups, gamma, beta, eps):
    view = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, positions, C)
    mean = view.mean(axis=1, keepdims=True)  # the mistake, here and in the next line
    var = view.var(axis=1, keepdims=True)
    xhat = ((view - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * xhat + beta, None


def gn_forward_across_batch(x, num_groups, gamma, beta, eps):
    view = grouped(x, num_groups)
    mean = view.mean(axis=(0, 1, 3), keepdims=True)  # the mistake, here and in the next line
    var = view.var(axis=(0, 1, 3), keepdims=True)
    xhat = ((view - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * xhat + beta, None


def gn_forward_unbiased(x, num_groups, gamma, beta, eps):
    view = grouped(x, num_groups)
    mean = view.mean(axis=(1, 3), keepdims=True)
    var = view.var(axis=(1, 3), keepdims=True, ddof=1)  # the mistake
    xhat = ((view - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * xhat + beta, None


def gn_backward_missing_mean_term(dy, cache):
    xhat, rstd, gamma, num_groups = cache
    dxhat, xhat_view = grouped(dy * gamma, num_groups), grouped(xhat, num_groups)
    dx = rstd * (dxhat - xhat_view * (dxhat * xhat_view).mean(axis=(1, 3), keepdims=True))
    axes = leading_axes(dy)
    return dx.reshape(dy.shape), (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


#: (mistake key, exercise, the functions replaced): one case per mistake, some in two layers.
MISTAKE_CASES = [
    ("unbiased_variance", "batchnorm", {"batchnorm_forward": bn_forward_unbiased}),
    ("unbiased_variance", "groupnorm", {"groupnorm_forward": gn_forward_unbiased}),
    ("batchnorm_over_features", "batchnorm", {"batchnorm_forward": bn_forward_over_features}),
    (
        "batchnorm_over_first_axis_only",
        "batchnorm",
        {"batchnorm_forward": bn_forward_first_axis_only},
    ),
    ("eps_outside_sqrt", "batchnorm", {"batchnorm_forward": bn_forward_eps_outside}),
    (
        "backward_missing_mean_term",
        "batchnorm",
        {"batchnorm_backward": bn_backward_missing_mean_term},
    ),
    (
        "backward_missing_mean_term",
        "groupnorm",
        {"groupnorm_backward": gn_backward_missing_mean_term},
    ),
    (
        "backward_missing_variance_term",
        "batchnorm",
        {"batchnorm_backward": bn_backward_missing_variance_term},
    ),
    (
        "backward_missing_both_terms",
        "batchnorm",
        {"batchnorm_backward": bn_backward_missing_both_terms},
    ),
    ("dxhat_without_gamma", "batchnorm", {"batchnorm_backward": bn_backward_without_gamma}),
    (
        "param_grads_over_first_axis_only",
        "batchnorm",
        {"batchnorm_backward": bn_backward_params_first_axis},
    ),
    (
        "param_grads_over_features",
        "layernorm",
        {"layernorm_backward": ln_backward_params_over_features},
    ),
    (
        "running_var_not_bessel_corrected",
        "running_update",
        {"running_update": running_update_biased},
    ),
    ("keras_momentum", "running_update", {"running_update": running_update_keras}),
    (
        "eval_with_batch_statistics",
        "batchnorm_eval",
        {"batchnorm_eval_forward": bn_eval_forward_batch_statistics},
    ),
    (
        "eval_backward_through_statistics",
        "batchnorm_eval",
        {"batchnorm_eval_backward": bn_eval_backward_through_statistics},
    ),
    ("layernorm_over_batch", "layernorm", {"layernorm_forward": ln_forward_over_batch}),
    ("layernorm_over_whole_sample", "layernorm", {"layernorm_forward": ln_forward_whole_sample}),
    ("rmsnorm_over_batch", "rmsnorm", {"rmsnorm_forward": rms_forward_over_batch}),
    ("rmsnorm_centering", "rmsnorm", {"rmsnorm_forward": rms_forward_centering}),
    ("rmsnorm_backward_mean_term", "rmsnorm", {"rmsnorm_backward": rms_backward_mean_term}),
    ("groupnorm_interleaved_groups", "groupnorm", {"groupnorm_forward": gn_forward_interleaved}),
    ("groupnorm_per_position", "groupnorm", {"groupnorm_forward": gn_forward_per_position}),
    ("groupnorm_per_channel", "groupnorm", {"groupnorm_forward": gn_forward_per_channel}),
    ("groupnorm_across_batch", "groupnorm", {"groupnorm_forward": gn_forward_across_batch}),
]


# ---------------------------------------------------------------------------
# The checker's verdicts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("exercise", RIGHT)
def test_right_implementations_pass(exercise):
    report = check_with(exercise)
    assert report.passed, str(report)
    assert report.status == "passed"
    assert report.diagnoses == ()
    assert str(report).startswith(f"{report.exercise}: passed")


@pytest.mark.parametrize(
    ("mistake", "exercise", "replaced"),
    MISTAKE_CASES,
    ids=[f"{mistake}-{exercise}" for mistake, exercise, _ in MISTAKE_CASES],
)
def test_each_known_mistake_is_named(mistake, exercise, replaced):
    report = check_with(exercise, **replaced)
    assert not report.passed
    assert report.diagnoses == (mistake,), str(report)
    assert report.status == "known mistakes found"
    name = exercises.MISTAKES[mistake].name
    assert name in str(report)
    assert html.escape(name) in report._repr_html_()


def test_every_named_mistake_has_a_case():
    assert {case[0] for case in MISTAKE_CASES} == set(exercises.MISTAKES)


def test_missing_variance_term_in_rmsnorm_is_named_too():
    def rms_backward_direct(dy, cache):
        xhat, rstd, gamma = cache
        return rstd * dy * gamma, (dy * xhat).sum(axis=leading_axes(dy))

    report = check_with("rmsnorm", rmsnorm_backward=rms_backward_direct)
    assert report.diagnoses == ("backward_missing_variance_term",)


def test_two_mistakes_at_once_are_both_named():
    report = check_with(
        "running_update",
        running_update=lambda mean, var, batch_mean, batch_var, n, momentum: (
            momentum * mean + (1 - momentum) * batch_mean,
            momentum * var + (1 - momentum) * batch_var,
        ),
    )
    assert set(report.diagnoses) == {"keras_momentum", "running_var_not_bessel_corrected"}

    def backward_two_mistakes(dy, cache):
        xhat, rstd, gamma = cache
        dxhat = dy * gamma
        dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        return dx, (dy * xhat).sum(axis=0), dy.sum(axis=leading_axes(dy))

    report = check_with("layernorm", layernorm_backward=backward_two_mistakes)
    assert set(report.diagnoses) == {
        "backward_missing_mean_term",
        "param_grads_over_first_axis_only",
    }
    explained = {finding.mistakes[0].key: finding.outputs for finding in report.stages[1].findings}
    assert explained == {
        "backward_missing_mean_term": ("dx",),
        "param_grads_over_first_axis_only": ("dgamma",),
    }


def test_an_unknown_mistake_gets_its_largest_error_located_and_a_hint():
    def layernorm_forward_without_beta(x, gamma, beta, eps):
        y, cache = layernorm_forward(x, gamma, beta, eps)
        return y - beta, cache

    report = check_with("layernorm", layernorm_forward=layernorm_forward_without_beta)
    assert not report.passed
    assert report.status == "no known mistake"
    assert report.diagnoses == ()
    (finding,) = report.stages[0].findings
    assert finding.outputs == ("y",)
    assert finding.where.startswith("no known mistake; largest error at y[")
    assert "relative error" in finding.where
    assert finding.hint
    assert report.stages[1].status == "not checked yet"
    text = str(report)
    assert "no known mistake; largest error at y[" in text and "Hint:" in text


def test_an_unknown_backward_mistake_names_the_output():
    def batchnorm_backward_dbeta_doubled(dy, cache):
        dx, dgamma, dbeta = batchnorm_backward(dy, cache)
        return dx, dgamma, 2 * dbeta

    report = check_with("batchnorm", batchnorm_backward=batchnorm_backward_dbeta_doubled)
    (finding,) = report.stages[1].findings
    assert finding.outputs == ("dbeta",)
    assert finding.where.startswith("no known mistake; largest error at dbeta[")
    assert report.stages[0].passed


def test_a_wrong_shape_is_reported_as_a_shape():
    def backward_keepdims(dy, cache):
        xhat, rstd, gamma = cache
        axes = leading_axes(dy)
        dx = three_terms(dy * gamma, xhat, rstd, axes)
        return dx, (dy * xhat).sum(axis=axes, keepdims=True), dy.sum(axis=axes)

    report = check_with("batchnorm", batchnorm_backward=backward_keepdims)
    (finding,) = report.stages[1].findings
    assert finding.outputs == ("dgamma",)
    assert "has shape (1, 5) where (5,) was expected" in finding.where


def test_not_implemented_is_reported_without_raising():
    def stub(*arguments):
        raise NotImplementedError

    report = exercises.check_batchnorm(stub, stub)
    assert not report.passed and report.not_implemented
    assert report.status == "not implemented yet"
    assert str(report).startswith("BatchNorm, training mode: not implemented yet")
    assert report.stages[1].status == "not checked yet"

    report = exercises.check_batchnorm(batchnorm_forward, stub)
    assert report.stages[0].passed
    assert report.stages[1].status == "not implemented yet"
    assert report.headline() == "BatchNorm, training mode: not implemented yet (batchnorm_backward)"


def test_an_exception_in_the_students_code_is_reported_with_its_line():
    def forward_wrong_axis(x, gamma, beta, eps):
        mean = x.mean(axis=3, keepdims=True)
        return x - mean, None

    report = exercises.check_layernorm(forward_wrong_axis, layernorm_backward)
    assert report.status == "raised an exception"
    message = report.stages[0].message
    assert message.startswith("AxisError: ")
    assert "mean = x.mean(axis=3, keepdims=True)" in message


def test_a_forward_that_returns_no_cache_is_told_what_to_return():
    report = exercises.check_layernorm(lambda x, gamma, beta, eps: x, layernorm_backward)
    assert report.status == "returned the wrong thing"
    assert report.stages[0].message == "layernorm_forward should return (y, cache), got ndarray"


def test_a_function_that_changes_its_inputs_in_place_does_not_fool_the_check():
    def forward_in_place(x, gamma, beta, eps):
        axes = leading_axes(x)
        x -= x.mean(axis=axes, keepdims=True)
        x /= np.sqrt(x.var(axis=axes, keepdims=True) + eps)
        return gamma * x + beta, None

    report = exercises.check_batchnorm(forward_in_place, None)  # None: not written yet
    assert report.stages[0].passed
    assert report.stages[1].status == "not implemented yet"


# ---------------------------------------------------------------------------
# How it decides: the mistaken layers and the trials
# ---------------------------------------------------------------------------


def stages():
    return [
        pytest.param(exercise, stage, id=f"{name}-{stage.function}")
        for name, exercise in exercises._EXERCISES.items()
        for stage in exercise.stages
    ]


@pytest.mark.parametrize(("exercise", "stage"), stages())
def test_with_every_switch_off_the_mistaken_layer_is_the_reference(exercise, stage):
    for trial in exercises._trials(exercise.trials):
        mistaken, right = stage.layer(trial), stage.reference(trial)
        for name in stage.outputs:
            assert mistaken[name].shape == right[name].shape
            assert relative_error(mistaken[name], right[name]) < 1e-12


@pytest.mark.parametrize(("exercise", "stage"), stages())
def test_every_single_mistake_is_far_from_right_and_from_every_other(exercise, stage):
    trials = exercises._trials(exercise.trials)

    def outputs(switches):
        return [exercises._with_mistakes(stage, trial, switches) for trial in trials]

    def distance(first, second):
        """The largest relative difference of two sets of outputs (1 if a shape differs)."""
        return max(
            1.0 if a[name].shape != b[name].shape else relative_error(a[name], b[name])
            for a_trials, b_trials in [(first, second)]
            for a, b in zip(a_trials, b_trials, strict=True)
            for name in stage.outputs
        )

    right = outputs(())
    single = {(switch,): outputs((switch,)) for switch in stage.switches}
    margin = 1e4 * exercises.MATCH_TOLERANCE
    for switches, mistaken in single.items():
        assert distance(mistaken, right) > margin, switches
    for (first, first_outputs), (second, second_outputs) in itertools.combinations(
        single.items(), 2
    ):
        assert distance(first_outputs, second_outputs) > margin, (first, second)


def test_trials_have_a_random_upstream_gradient_and_several_shapes():
    for kind in ("token", "group"):
        trials = exercises._trials(kind)
        assert len({trial.x.ndim for trial in trials}) == 3
        for trial in trials:
            assert trial.dy.std() > 0.5  # not ones: sum(BatchNorm(x)) has gradient 0
            assert trial.x.dtype == trial.dy.dtype == np.float64
            assert trial.gamma.std() > 0.1  # not ones: γ's place in the backward shows


def test_a_report_prints_its_mistakes_with_explanation_and_fix():
    report = check_with("rmsnorm", rmsnorm_forward=rms_forward_centering)
    text, page = str(report), report._repr_html_()
    mistake = exercises.MISTAKES["rmsnorm_centering"]
    assert text.splitlines()[0] == "RMSNorm: known mistakes found (rmsnorm_forward)"
    assert "Fix:" in mistake.explanation
    assert "(explains y)" in text
    assert mistake.explanation.split(". ")[0] in " ".join(text.split())
    assert page.startswith("<div") and "Fix:" in page


def test_the_example_in_the_module_docstring_runs():
    results = doctest.testmod(exercises)
    assert results.attempted > 0 and results.failed == 0


def test_every_mistake_explanation_says_the_fix():
    for mistake in exercises.MISTAKES.values():
        assert "Fix:" in mistake.explanation, mistake.key


# ---------------------------------------------------------------------------
# What lesson 9 says about the sizes of the mistakes
# ---------------------------------------------------------------------------


def test_the_sizes_of_the_mistakes_are_as_lesson_9_reads_them():
    sizes = exercises.mistake_sizes()
    typical = {key: entry["size"] for key, entry in sizes["typical"].items()}
    assert set(typical) == set(exercises.MISTAKES)
    # "Most mistakes change some output by ten percent or more"
    assert sum(size >= 0.1 for size in typical.values()) > len(typical) / 2
    # "The smallest ones are the quiet kind. ε outside the square root ..."
    quiet = sorted(typical, key=typical.get)[:3]
    assert quiet[0] == "eps_outside_sqrt"
    assert set(quiet[1:]) == {"unbiased_variance", "running_var_not_bessel_corrected"}
    # each is still far above the checker's tolerance
    assert min(typical.values()) > 10 * exercises.MATCH_TOLERANCE
    # "The two variance mistakes shrink as 1/n (panel b) ... a fraction of a percent"
    counts = np.asarray(sizes["counts"])
    for key in ("unbiased_variance", "running_var_not_bessel_corrected"):
        size = np.asarray(sizes[key])
        assert np.all(np.diff(size) < 0)
        scaled = counts * size  # about constant if the size falls as 1/n
        assert np.all(scaled < 1.0 + 1e-9) and np.all(scaled[counts >= 16] > 0.2)
        assert size[counts == 256][0] < 1e-2
    assert np.allclose(sizes["running_var_not_bessel_corrected"], 1 / counts)


def test_the_mistake_sizes_figure_has_a_bar_per_mistake():
    sizes = exercises.mistake_sizes()
    figure = exercises.plot_mistake_sizes(sizes)
    typical_ax = figure.axes[0]
    assert len(typical_ax.patches) == len(exercises.MISTAKES)
    labels = {label.get_text() for label in typical_ax.get_yticklabels()}
    assert labels == {mistake.name for mistake in exercises.MISTAKES.values()}


# ---------------------------------------------------------------------------
# Solutions notebooks start from their lesson's set-up
# ---------------------------------------------------------------------------


def test_lesson_setup_returns_what_the_lesson_defines_before_its_first_section():
    lesson = exercises.lesson_setup("01")
    assert lesson.x.shape == (lesson.N, lesson.T, lesson.D) == lesson.dy.shape
    assert lesson.D % lesson.G == 0
    assert not hasattr(lesson, "CORE")  # defined in section 2, after the set-up
    lesson = exercises.lesson_setup("05_rms_vs_layernorm")  # "%matplotlib inline" is skipped
    assert lesson.TIMING_REPEATS >= 1


def test_an_unknown_lesson_is_an_error_that_lists_the_lessons():
    with pytest.raises(ValueError, match="the lessons are: 01_what_each_method_normalizes"):
        exercises.lesson_setup("99")
