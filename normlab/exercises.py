"""Write it yourself: implement the normalization layers, and get told what is wrong, by name.

Lesson 9 (``notebooks/09_write_it_yourself.ipynb``) asks for eleven functions. All
are features-last, as normlab, and work on any number of leading axes: (N, D),
(N, T, D) or (N, H, W, C). ``gamma`` and ``beta`` are the papers' γ and β, what
normlab and PyTorch call ``weight`` and ``bias``; they have the shape of the last
axis. A ``cache`` is whatever your forward wants to hand to your backward.

BatchNorm in training mode (statistics of the batch: every axis but the last)::

    batchnorm_forward(x, gamma, beta, eps) -> (y, cache)
    batchnorm_backward(dy, cache) -> (dx, dgamma, dbeta)

BatchNorm's running statistics, PyTorch's convention (``batch_var`` is the biased
variance the forward normalized with, ``n`` the number of values per feature)::

    running_update(running_mean, running_var, batch_mean, batch_var, n, momentum)
        -> (running_mean, running_var)

BatchNorm in eval mode (the running statistics are constants)::

    batchnorm_eval_forward(x, running_mean, running_var, gamma, beta, eps) -> (y, cache)
    batchnorm_eval_backward(dy, cache) -> (dx, dgamma, dbeta)

LayerNorm and RMSNorm over the last axis, GroupNorm over space and a group of
channels (channel c in group ``c // (C // num_groups)``, as PyTorch)::

    layernorm_forward(x, gamma, beta, eps) -> (y, cache)
    layernorm_backward(dy, cache) -> (dx, dgamma, dbeta)
    rmsnorm_forward(x, gamma, eps) -> (y, cache)
    rmsnorm_backward(dy, cache) -> (dx, dgamma)
    groupnorm_forward(x, num_groups, gamma, beta, eps) -> (y, cache)
    groupnorm_backward(dy, cache) -> (dx, dgamma, dbeta)

One check per exercise: :func:`check_batchnorm`, :func:`check_running_update`,
:func:`check_batchnorm_eval`, :func:`check_layernorm`, :func:`check_rmsnorm`,
:func:`check_groupnorm`. Each returns a :class:`Report` that prints itself in a
notebook and has a boolean ``passed``. A function that raises ``NotImplementedError``
(or is passed as None) is reported as "not implemented yet"; any other exception is
reported with the line of your code it came from, and never raised.

How the checker decides
-----------------------
1. **Trials.** Each check draws a few float64 inputs of different shapes (2-, 3- and
   4-d where the layer allows it), with a different scale and offset per feature,
   a random γ, β and ε, and a random upstream gradient ``dy``: never ones, since
   ``sum(BatchNorm(x))`` is constant and its gradient is 0 for any backward.
2. **Right.** Your outputs (``y``, ``dx``, ``dgamma``, ``dbeta``, ``running_mean``,
   ``running_var``) are compared with :mod:`normlab.reference` in every trial. All
   within a relative error of :data:`MATCH_TOLERANCE`: passed.
3. **A known mistake.** For an output that differs, the checker computes the same
   layer with known mistakes switched on (:data:`MISTAKES`: one function per
   layer, each mistake one of its switches) and looks for the smallest set of
   mistakes that reproduces your output, in every trial, to the same tolerance.
   A diagnosis is that match: computed, never guessed.
4. **Unknown.** When no set of known mistakes reproduces an output, the report
   gives its largest error, where it is (output, index, trial) and a hint.
5. **Order.** A backward is checked only once its forward passes: it gets your
   forward's cache, and a wrong forward would make every backward look wrong.

Example
-------
>>> import numpy as np
>>> from normlab import exercises
>>> def layernorm_forward(x, gamma, beta, eps):
...     mean = x.mean(axis=-1, keepdims=True)
...     var = x.var(axis=-1, keepdims=True, ddof=1)   # the mistake: ddof=1
...     xhat = (x - mean) / np.sqrt(var + eps)
...     return xhat * gamma + beta, None
>>> report = exercises.check_layernorm(layernorm_forward, None)
>>> report.passed, report.diagnoses
(False, ('unbiased_variance',))
"""

from __future__ import annotations

import html
import itertools
import math
import sysconfig
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from normlab import plotting, reference
from normlab.gradcheck import relative_error

__all__ = [
    "MATCH_TOLERANCE",
    "MISTAKES",
    "Finding",
    "Mistake",
    "Report",
    "StageReport",
    "check_batchnorm",
    "check_batchnorm_eval",
    "check_groupnorm",
    "check_layernorm",
    "check_rmsnorm",
    "check_running_update",
    "lesson_setup",
    "mistake_sizes",
    "plot_mistake_sizes",
]

#: Largest relative error (largest absolute difference over the largest entry, as
#: :func:`normlab.gradcheck.relative_error`) at which two float64 outputs count as the same.
#: Float64 rounding and the order of the sums stay far below it, and every mistake the checker
#: names changes some output of its trials by more than 10⁴ times it (tests/test_exercises.py).
MATCH_TOLERANCE = 1e-7

#: At most this many mistakes are combined to explain one output.
MAX_MISTAKES_COMBINED = 3

_SEED = 20240901


# ---------------------------------------------------------------------------
# The mistakes, by name
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """A common mistake: a key for code, a name for people and a paragraph with the fix."""

    key: str
    name: str
    explanation: str


def _mistakes(*entries: Mistake) -> dict[str, Mistake]:
    return {entry.key: entry for entry in entries}


#: Every mistake the checker can name, by key.
MISTAKES: dict[str, Mistake] = _mistakes(
    Mistake(
        "unbiased_variance",
        "unbiased variance in the forward pass",
        "Your forward divides the squared deviations by n − 1 (np.var(..., ddof=1), or "
        "torch.var's default) where the layer divides by n. BatchNorm, LayerNorm and GroupNorm "
        "normalize with the biased variance, the plain mean of the squared deviations, so that "
        "x̂ has mean square 1 (up to ε); only BatchNorm's running_var is stored unbiased. The "
        "two differ by a factor n/(n − 1), about 1/(2n) in the output: small for large groups, "
        "which is why the mistake survives in code that is only checked by training it. "
        "Fix: x.var(axis=..., keepdims=True), numpy's default ddof=0.",
    ),
    Mistake(
        "running_var_not_bessel_corrected",
        "running variance not Bessel-corrected",
        "Your running_var moves towards the batch's biased variance. PyTorch and normlab store "
        "the unbiased estimate, batch_var · n/(n − 1) with n the values per feature (N·T for an "
        "(N, T, D) batch), although the forward normalizes with the biased one: at inference "
        "the running variance stands for the variance of the whole data, and the biased batch "
        "variance underestimates it by the factor (n − 1)/n, most for small batches. "
        "Fix: running_var = (1 − momentum) · running_var + momentum · batch_var · n / (n − 1).",
    ),
    Mistake(
        "keras_momentum",
        "Keras' momentum convention",
        "Your update gives the weight momentum to the old running value: running = momentum · "
        "running + (1 − momentum) · batch. That is Keras' convention (default 0.99). In PyTorch "
        "and normlab momentum is the weight of the new batch, running = (1 − momentum) · "
        "running + momentum · batch, default 0.1, so Keras' 0.99 is 0.01 here. Swapped, "
        "momentum = 0.1 keeps only a tenth of the history and the running statistics follow "
        "the last batch or two. Fix: swap the two weights.",
    ),
    Mistake(
        "batchnorm_over_features",
        "BatchNorm over the features instead of over the batch",
        "Your statistics are one per sample (or token), over its features: that is LayerNorm. "
        "BatchNorm takes one mean and one variance per feature, over every other axis: the "
        "batch, and for (N, T, D) sequences or (N, H, W, C) images the time steps or positions "
        "too. Fix: axes = tuple(range(x.ndim - 1)), with keepdims=True so the statistics "
        "broadcast against x.",
    ),
    Mistake(
        "batchnorm_over_first_axis_only",
        "BatchNorm over the first axis only",
        "Your statistics average over axis 0 alone, so on an (N, T, D) input every time step "
        "(and on (N, H, W, C) every position) gets statistics of its own. normlab, like "
        "PyTorch's BatchNorm1d on (N, C, L) and BatchNorm2d, takes one statistic per feature "
        "over all N·T tokens: for BatchNorm a batch of N sequences of length T is a batch of "
        "N·T tokens. Fix: average over every axis but the last, tuple(range(x.ndim - 1)).",
    ),
    Mistake(
        "layernorm_over_batch",
        "LayerNorm over the batch instead of over the features",
        "Your statistics are one per feature, over the batch: that is BatchNorm. LayerNorm "
        "normalizes each token (each row of an (N, D) input) with the mean and variance of its "
        "own features, the last axis, so that it does not depend on the rest of the batch. "
        "Fix: x.mean(axis=-1, keepdims=True) and x.var(axis=-1, keepdims=True).",
    ),
    Mistake(
        "layernorm_over_whole_sample",
        "LayerNorm over the whole sample instead of each token",
        "Your statistics are one per sample, over all its tokens (or positions) and features. "
        "That is LayerNorm with normalized_shape = x.shape[1:], as some vision papers use it, "
        "not the per-token LayerNorm whose γ has the shape of the last axis: each token "
        "(n, t) gets its own mean and variance over its D features. Fix: axis=-1.",
    ),
    Mistake(
        "rmsnorm_over_batch",
        "RMSNorm over the batch instead of over the features",
        "Your mean square is one per feature, over the batch. RMSNorm divides each token by "
        "the root mean square of its own features, the last axis. "
        "Fix: (x ** 2).mean(axis=-1, keepdims=True).",
    ),
    Mistake(
        "rmsnorm_centering",
        "RMSNorm that subtracts the mean",
        "Your forward subtracts each token's mean before dividing: that is LayerNorm without β. "
        "RMSNorm does not center. It divides x itself by its root mean square, "
        "y = γ · x / sqrt(mean(x²) + ε), so its output keeps the token's mean (in units of the "
        "root mean square), and it saves the mean's reductions. Fix: use x, not x − mean.",
    ),
    Mistake(
        "groupnorm_interleaved_groups",
        "GroupNorm groups of the wrong channels (interleaved)",
        "Your groups take every G-th channel (channel c in group c % G), which is what "
        "reshaping the channels into (C/G, G) gives. PyTorch and normlab put consecutive "
        "channels together: channel c is in group c // (C/G), from the reshape (G, C/G). Both "
        "normalize, but only one matches the layer (and its trained checkpoints). "
        "Fix: x.reshape(N, -1, G, C // G), statistics over axes (1, 3).",
    ),
    Mistake(
        "groupnorm_per_position",
        "GroupNorm at each position separately",
        "Your statistics are over the group's channels at one position (one pixel or time step) "
        "only. GroupNorm takes one mean and variance per sample and group, over all positions "
        "(H·W or T) and the group's C/G channels. Fix: on the (N, H·W, G, C/G) view, average "
        "over axes (1, 3).",
    ),
    Mistake(
        "groupnorm_per_channel",
        "GroupNorm per channel (InstanceNorm)",
        "Your statistics are per sample and channel, over the positions: the group's other "
        "channels take no part. That is InstanceNorm, GroupNorm with one channel per group. "
        "Fix: on the (N, H·W, G, C/G) view average over axes (1, 3), the positions and the "
        "group's channels together.",
    ),
    Mistake(
        "groupnorm_across_batch",
        "GroupNorm across the batch",
        "Your statistics average over the samples of the batch too, so each sample's output "
        "depends on its batch-mates, as BatchNorm's does. GroupNorm is per sample: one mean "
        "and variance per sample and group. Fix: keep axis 0 out of the reduction.",
    ),
    Mistake(
        "eps_outside_sqrt",
        "ε outside the square root",
        "Your forward divides by sqrt(var) + ε; the layers divide by sqrt(var + ε). For a "
        "standard deviation σ the two differ by about ε/σ − ε/(2σ²) relative: invisible in a "
        "plot while σ² is much larger than ε. For a (nearly) constant feature they do not: "
        "sqrt(var) + ε divides by ε where sqrt(var + ε) divides by sqrt(ε), an output "
        "1/sqrt(ε) times larger (about 300 times for ε = 1e-5). PyTorch, the papers and "
        "normlab put ε inside. Fix: 1 / np.sqrt(var + eps).",
    ),
    Mistake(
        "backward_missing_mean_term",
        "backward without the term through the mean",
        "Your dx is rstd · (dx̂ − x̂ · mean(dx̂ · x̂)): the road through the mean, −mean(dx̂), is "
        "missing. Every input moves its group's mean, and the mean moves every output of the "
        "group (∂μ/∂x_j = 1/n), which gives −(1/n) Σ_i dx̂_i. Without it the input gradient of "
        "a centering layer no longer sums to 0 over a group. Fix: dx = rstd · (dx̂ − "
        "mean(dx̂) − x̂ · mean(dx̂ · x̂)), both means over the axes of the statistics.",
    ),
    Mistake(
        "backward_missing_variance_term",
        "backward without the term through the variance",
        "Your dx lacks −x̂ · mean(dx̂ · x̂), the road through the variance: every input moves "
        "its group's variance (∂σ²/∂x_j = 2(x_j − μ)/n) and with it the scale of every output "
        "of the group. A check with the loss sum(BatchNorm(x)) cannot see this mistake, which "
        "is why the upstream gradient must be random (lesson 1). Fix: dx = rstd · (dx̂ − "
        "mean(dx̂) − x̂ · mean(dx̂ · x̂)) (RMSNorm: without the mean(dx̂) term).",
    ),
    Mistake(
        "backward_missing_both_terms",
        "backward without the terms through the statistics",
        "Your dx is rstd · dx̂, the gradient as if the mean and the variance were constants. "
        "That is right only for BatchNorm in eval mode, whose running statistics are fixed. "
        "In training mode, and for LayerNorm and GroupNorm always, the statistics are computed "
        "from x, and x reaches the output through them too. Fix: dx = rstd · (dx̂ − "
        "mean(dx̂) − x̂ · mean(dx̂ · x̂)).",
    ),
    Mistake(
        "rmsnorm_backward_mean_term",
        "RMSNorm backward with a term through the mean",
        "Your dx subtracts mean(dx̂), LayerNorm's term through the mean. RMSNorm subtracts no "
        "mean, so there is no road through one: dx = rstd · (dx̂ − x̂ · mean(dx̂ · x̂)). With "
        "the extra term the gradient sums to 0 over each token, which is true of LayerNorm "
        "(invariant to a shift of the token) but not of RMSNorm. Fix: drop the mean(dx̂) term.",
    ),
    Mistake(
        "dxhat_without_gamma",
        "dx̂ without γ",
        "Your input gradient starts from dy where it needs ∂L/∂x̂ = dy · γ: the output is "
        "y = γ · x̂ + β, so the chain rule multiplies by γ before the gradient reaches x̂. With "
        "γ = 1, its initial value, the mistake cannot be seen, which is why the checker draws "
        "a random γ. Fix: dxhat = dy * gamma, then the formula for dx with dxhat.",
    ),
    Mistake(
        "param_grads_over_first_axis_only",
        "dγ, dβ summed over the first axis only",
        "Your dγ (or dβ) is summed over axis 0 alone, so on an (N, T, D) input it has shape "
        "(T, D). γ and β are shared by every sample and every token (and position), so their "
        "gradients sum over every axis but the features. Fix: dγ = Σ dy · x̂ and dβ = Σ dy "
        "over tuple(range(x.ndim - 1)), shape (D,), the shape of γ.",
    ),
    Mistake(
        "param_grads_over_features",
        "dγ, dβ summed over the features",
        "Your dγ (or dβ) is summed over the last axis, one number per sample or token. γ and β "
        "have one entry per feature, and so do their gradients. Fix: sum dy · x̂ and dy over "
        "every axis except the last, tuple(range(x.ndim - 1)).",
    ),
    Mistake(
        "eval_with_batch_statistics",
        "batch statistics in eval mode",
        "Your eval forward normalizes with the batch's own mean and variance, as in training. "
        "In eval mode BatchNorm uses running_mean and running_var, so that a sample's output "
        "does not depend on the rest of the batch and a batch of one works. "
        "Fix: y = γ · (x − running_mean) / sqrt(running_var + ε) + β.",
    ),
    Mistake(
        "eval_backward_through_statistics",
        "eval backward through the statistics",
        "Your eval dx has the three terms of the training backward. In eval mode the mean and "
        "variance are the running statistics, constants that do not depend on x, so the only "
        "road from x to y is the direct one: dx = γ · dy / sqrt(running_var + ε), and BatchNorm "
        "in eval mode is a fixed affine map. Fix: drop the two subtracted terms.",
    ),
)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

PASSED = "passed"
NOT_IMPLEMENTED = "not implemented yet"
MISTAKES_FOUND = "known mistakes found"
NO_KNOWN_MISTAKE = "no known mistake"
RAISED = "raised an exception"
BAD_RETURN = "returned the wrong thing"
NOT_CHECKED = "not checked yet"


@dataclass(frozen=True)
class Finding:
    """What is wrong with some outputs: the mistakes that reproduce them, or the largest error.

    ``mistakes`` is empty when no combination of known mistakes reproduces the outputs;
    ``where`` then says where the largest error is, and ``hint`` what to look at.
    """

    outputs: tuple[str, ...]
    mistakes: tuple[Mistake, ...] = ()
    where: str = ""
    hint: str = ""


@dataclass(frozen=True)
class StageReport:
    """The verdict on one function of an exercise (a forward, a backward, the running update)."""

    function: str
    status: str
    findings: tuple[Finding, ...] = ()
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass(frozen=True)
class Report:
    """The checker's verdict on one exercise; prints as text, and as HTML in a notebook.

    Attributes
    ----------
    exercise : str
        Its title, e.g. ``"BatchNorm, training mode"``.
    stages : tuple of StageReport
        One per function checked, in order (a backward after its forward).
    trials : tuple of str
        The input shapes tried.
    """

    exercise: str
    stages: tuple[StageReport, ...]
    trials: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every function of the exercise matches :mod:`normlab.reference`."""
        return all(stage.passed for stage in self.stages)

    @property
    def status(self) -> str:
        """``"passed"``, or the status of the first part that did not pass."""
        for stage in self.stages:
            if not stage.passed:
                return stage.status
        return PASSED

    @property
    def not_implemented(self) -> bool:
        """True when a function of the exercise still raises NotImplementedError."""
        return any(stage.status == NOT_IMPLEMENTED for stage in self.stages)

    @property
    def diagnoses(self) -> tuple[str, ...]:
        """The keys of the mistakes found (see :data:`MISTAKES`), without repeats."""
        keys = [
            mistake.key
            for stage in self.stages
            for finding in stage.findings
            for mistake in finding.mistakes
        ]
        return tuple(dict.fromkeys(keys))

    def headline(self) -> str:
        if self.passed:
            return f"{self.exercise}: {PASSED}"
        stage = next(stage for stage in self.stages if not stage.passed)
        return f"{self.exercise}: {stage.status} ({stage.function})"

    def __str__(self) -> str:
        lines = [self.headline()]
        if self.passed:
            checked = ", ".join(stage.function for stage in self.stages)
            lines.append(f"  {checked}: same numbers as normlab.reference on {self._shapes()}")
            return "\n".join(lines)
        explained: set[str] = set()  # each mistake's paragraph once, where it first appears
        for stage in self.stages:
            lines.append(f"  {stage.function}: {stage.status}" + _colon(stage.message))
            for finding in stage.findings:
                if finding.mistakes:
                    lines.append(_indent("* " + _diagnosis(finding), 4, hanging=6))
                    lines += [
                        _indent(mistake.explanation, 6)
                        for mistake in finding.mistakes
                        if mistake.key not in explained
                    ]
                    explained.update(mistake.key for mistake in finding.mistakes)
                else:
                    outputs = ", ".join(finding.outputs)
                    lines.append(_indent(f"* {outputs}: {finding.where}", 4, hanging=6))
                    lines.append(_indent("Hint: " + finding.hint, 6))
        return "\n".join(lines)

    __repr__ = __str__

    def _shapes(self) -> str:
        return "inputs of shape " + ", ".join(self.trials)

    def _repr_html_(self) -> str:
        if self.passed:
            colour = plotting.COLORS["bluish_green"]
        elif self.not_implemented:
            colour = plotting.REFERENCE_COLOR
        else:
            colour = plotting.COLORS["vermillion"]
        parts = [
            f'<div style="border-left: 6px solid {colour}; padding: 0.3em 0.8em;">',
            f"<b>{html.escape(self.headline())}</b>",
        ]
        if self.passed:
            checked = ", ".join(f"<code>{stage.function}</code>" for stage in self.stages)
            parts.append(
                f"<br>{checked}: same numbers as <code>normlab.reference</code> on "
                f"{html.escape(self._shapes())}</div>"
            )
            return "".join(parts)
        explained: set[str] = set()
        parts.append("<ul>")
        for stage in self.stages:
            parts.append(
                f"<li><code>{stage.function}</code>: {html.escape(stage.status)}"
                f"{html.escape(_colon(stage.message))}"
            )
            items = []
            for finding in stage.findings:
                if finding.mistakes:
                    paragraphs = [
                        f"<br>{html.escape(mistake.explanation)}"
                        for mistake in finding.mistakes
                        if mistake.key not in explained
                    ]
                    explained.update(mistake.key for mistake in finding.mistakes)
                    items.append(
                        f"<li><b>{html.escape(_diagnosis(finding))}</b>{''.join(paragraphs)}</li>"
                    )
                else:
                    outputs = html.escape(", ".join(finding.outputs))
                    items.append(
                        f"<li>{outputs}: {html.escape(finding.where)}<br>"
                        f"<i>Hint:</i> {html.escape(finding.hint)}</li>"
                    )
            if items:
                parts.append("<ul>" + "".join(items) + "</ul>")
            parts.append("</li>")
        parts.append("</ul></div>")
        return "".join(parts)


def _diagnosis(finding: Finding) -> str:
    """ "unbiased variance in the forward pass (explains y)", or two mistakes "together"."""
    names = " and ".join(mistake.name for mistake in finding.mistakes)
    outputs = ", ".join(finding.outputs)
    if len(finding.mistakes) == 1:
        return f"{names} (explains {outputs})"
    return f"{names}, together (explain {outputs})"


def _colon(message: str) -> str:
    return f": {message}" if message else ""


def _indent(text: str, spaces: int, *, hanging: int | None = None, width: int = 92) -> str:
    """``text`` wrapped to ``width``, indented by ``spaces`` (later lines by ``hanging``)."""
    later = spaces if hanging is None else hanging
    return textwrap.fill(
        text, width=width, initial_indent=" " * spaces, subsequent_indent=" " * later
    )


# ---------------------------------------------------------------------------
# Trials: the inputs every check tries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trial:
    """One set of inputs (float64): x, γ, β, ε, an upstream gradient and what a layer needs."""

    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    dy: np.ndarray
    num_groups: int | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    momentum: float | None = None

    @property
    def shape(self) -> str:
        return str(tuple(self.x.shape))

    def batch_statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        """BatchNorm's batch mean and biased variance per feature, and the values per feature."""
        axes = tuple(range(self.x.ndim - 1))
        return self.x.mean(axis=axes), self.x.var(axis=axes), self.x.size // self.x.shape[-1]


#: Different ε in different trials: large enough that "ε outside the square root" shows.
_EPS_VALUES = (1e-2, 1e-3, 1e-1)
#: Weights of the new batch; not 0.5, where PyTorch's convention and Keras' agree.
_MOMENTA = (0.1, 0.3, 0.05)

#: Input shapes: 2-d, 3-d and 4-d, so that a reduction over the wrong axes shows. GroupNorm's
#: have 6 channels, in 2 or 3 groups of at least 2 channels.
_SHAPES = ((6, 5), (4, 3, 5), (2, 3, 2, 4))
_GROUP_SHAPES = (((2, 3, 2, 6), 2), ((3, 4, 6), 3), ((4, 6), 2))


def _draw_trial(rng, shape, eps, *, num_groups=None, momentum=None) -> _Trial:
    features = shape[-1]
    scales = rng.uniform(0.3, 3.0, size=features)  # (D,): every feature its own spread
    offsets = rng.normal(0.0, 2.0, size=features)  # (D,) and its own mean
    return _Trial(
        x=rng.normal(size=shape) * scales + offsets,
        gamma=rng.uniform(0.5, 2.0, size=features),
        beta=rng.normal(0.0, 1.0, size=features),
        eps=eps,
        dy=rng.normal(size=shape),
        num_groups=num_groups,
        running_mean=rng.normal(0.0, 1.0, size=features),
        running_var=rng.uniform(0.3, 3.0, size=features),
        momentum=momentum,
    )


def _trials(layer: str) -> list[_Trial]:
    rng = np.random.default_rng([_SEED, sum(map(ord, layer))])
    if layer == "group":
        return [
            _draw_trial(rng, shape, eps, num_groups=groups)
            for (shape, groups), eps in zip(_GROUP_SHAPES, _EPS_VALUES, strict=True)
        ]
    return [
        _draw_trial(rng, shape, eps, momentum=momentum)
        for shape, eps, momentum in zip(_SHAPES, _EPS_VALUES, _MOMENTA, strict=True)
    ]


# ---------------------------------------------------------------------------
# The layers again, each mistake a switch (every switch at its default: the reference)
# ---------------------------------------------------------------------------


def _standardize(view, axes, eps, *, center=True, ddof=0, eps_outside=False):
    """x̂ of ``view``, statistics over ``axes``; ``ddof``, ``eps_outside``: forward mistakes."""
    count = math.prod(view.shape[axis] for axis in axes)
    mean = view.mean(axis=axes, keepdims=True) if center else 0.0
    var = ((view - mean) ** 2).sum(axis=axes, keepdims=True) / (count - ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return (view - mean) / std


def _leading(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - 1))  # every axis but the features


def _last(ndim: int) -> tuple[int, ...]:
    return (ndim - 1,)


def _first(ndim: int) -> tuple[int, ...]:
    return (0,)


def _all_but_first(ndim: int) -> tuple[int, ...]:
    return tuple(range(1, ndim))


#: Where dγ and dβ are summed: "shared" is right (γ, β are shared by all samples and positions).
_PARAM_AXES = {"shared": _leading, "first": _first, "features": _last}


def _same_view(array, inverse=False):
    return array


def _gradients(
    trial, xhat, rstd, view, axes, *, terms, gamma_in_dxhat, dgamma, dbeta
) -> dict[str, np.ndarray]:
    """dx, dγ, dβ from the right x̂ and rstd, with the backward's mistakes as switches.

    ``view(a)`` is ``a`` (..., C) as the statistics see it and ``view(a, inverse=True)``
    turns it back; ``axes`` are the statistics' axes of the view; ``terms`` says which
    of the three terms ``dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)`` dx keeps.
    """
    dy = trial.dy
    dxhat = view(dy * trial.gamma if gamma_in_dxhat else dy)
    xhat_view = view(xhat)
    dx = dxhat
    if terms in ("all", "no_variance"):
        dx = dx - dxhat.mean(axis=axes, keepdims=True)  # the road through the mean
    if terms in ("all", "no_mean"):
        dx = dx - xhat_view * (dxhat * xhat_view).mean(axis=axes, keepdims=True)  # the variance
    return {
        "dx": view(rstd * dx, inverse=True),
        "dgamma": (dy * xhat).sum(axis=_PARAM_AXES[dgamma](dy.ndim)),
        "dbeta": dy.sum(axis=_PARAM_AXES[dbeta](dy.ndim)),
    }


# BatchNorm, training mode

_BATCHNORM_AXES = {"batch": _leading, "features": _last, "first": _first}


def _batchnorm_forward(trial, *, axes="batch", ddof=0, eps_outside=False):
    reduce_axes = _BATCHNORM_AXES[axes](trial.x.ndim)
    xhat = _standardize(trial.x, reduce_axes, trial.eps, ddof=ddof, eps_outside=eps_outside)
    return {"y": xhat * trial.gamma + trial.beta}


def _batchnorm_backward(
    trial, *, terms="all", gamma_in_dxhat=True, dgamma="shared", dbeta="shared"
):
    _, (xhat, rstd, _, _) = reference.batch_norm_forward(
        trial.x, trial.gamma, trial.beta, trial.eps
    )
    return _gradients(
        trial, xhat, rstd, _same_view, _leading(xhat.ndim),
        terms=terms, gamma_in_dxhat=gamma_in_dxhat, dgamma=dgamma, dbeta=dbeta,
    )  # fmt: skip


# BatchNorm's running statistics


def _running_update(trial, *, bessel=True, convention="pytorch"):
    batch_mean, batch_var, count = trial.batch_statistics()
    if bessel:
        batch_var = batch_var * count / (count - 1)
    new = trial.momentum if convention == "pytorch" else 1 - trial.momentum  # the batch's weight
    return {
        "running_mean": (1 - new) * trial.running_mean + new * batch_mean,
        "running_var": (1 - new) * trial.running_var + new * batch_var,
    }


# BatchNorm, eval mode


def _batchnorm_eval_forward(trial, *, statistics="running", eps_outside=False):
    if statistics == "batch":
        return _batchnorm_forward(trial, eps_outside=eps_outside)
    root = np.sqrt(trial.running_var)
    std = root + trial.eps if eps_outside else np.sqrt(trial.running_var + trial.eps)
    return {"y": (trial.x - trial.running_mean) / std * trial.gamma + trial.beta}


def _batchnorm_eval_backward(
    trial, *, terms="direct", gamma_in_dxhat=True, dgamma="shared", dbeta="shared"
):
    _, (xhat, rstd, _, _) = reference.batch_norm_eval_forward(
        trial.x, trial.running_mean, trial.running_var, trial.gamma, trial.beta, trial.eps
    )
    return _gradients(
        trial, xhat, rstd, _same_view, _leading(xhat.ndim),
        terms=terms, gamma_in_dxhat=gamma_in_dxhat, dgamma=dgamma, dbeta=dbeta,
    )  # fmt: skip


# LayerNorm and RMSNorm

_TOKEN_AXES = {"features": _last, "batch": _leading, "sample": _all_but_first}


def _layernorm_forward(trial, *, axes="features", ddof=0, eps_outside=False):
    reduce_axes = _TOKEN_AXES[axes](trial.x.ndim)
    xhat = _standardize(trial.x, reduce_axes, trial.eps, ddof=ddof, eps_outside=eps_outside)
    return {"y": xhat * trial.gamma + trial.beta}


def _layernorm_backward(
    trial, *, terms="all", gamma_in_dxhat=True, dgamma="shared", dbeta="shared"
):
    _, (xhat, rstd, _, _) = reference.layer_norm_forward(
        trial.x, trial.gamma, trial.beta, trial.eps
    )
    return _gradients(
        trial, xhat, rstd, _same_view, _last(xhat.ndim),
        terms=terms, gamma_in_dxhat=gamma_in_dxhat, dgamma=dgamma, dbeta=dbeta,
    )  # fmt: skip


def _rmsnorm_forward(trial, *, axes="features", center=False, eps_outside=False):
    reduce_axes = _TOKEN_AXES[axes](trial.x.ndim)
    xhat = _standardize(trial.x, reduce_axes, trial.eps, center=center, eps_outside=eps_outside)
    return {"y": xhat * trial.gamma}


def _rmsnorm_backward(trial, *, terms="no_mean", gamma_in_dxhat=True, dgamma="shared"):
    _, (xhat, rstd, _, _) = reference.rms_norm_forward(trial.x, trial.gamma, trial.eps)
    gradients = _gradients(
        trial, xhat, rstd, _same_view, _last(xhat.ndim),
        terms=terms, gamma_in_dxhat=gamma_in_dxhat, dgamma=dgamma, dbeta="shared",
    )  # fmt: skip
    del gradients["dbeta"]  # RMSNorm has no β
    return gradients


# GroupNorm


def _group_view(shape: tuple[int, ...], num_groups: int, *, interleaved: bool = False):
    """A (N, ..., C) array <-> its (N, positions, G, C/G) view, and back.

    Entry [n, p, g, k] of the view is channel ``g · C/G + k`` (PyTorch's groups of
    consecutive channels), or channel ``k · G + g`` when ``interleaved``.
    """
    batch_size, channels = shape[0], shape[-1]
    per_group = channels // num_groups

    def view(array, inverse=False):
        if inverse:
            if interleaved:
                array = array.swapaxes(2, 3)  # (N, P, C/G, G)
            return array.reshape(shape)
        if interleaved:
            return array.reshape(batch_size, -1, per_group, num_groups).swapaxes(2, 3)
        return array.reshape(batch_size, -1, num_groups, per_group)

    return view


#: The axes of the (N, positions, G, C/G) view GroupNorm's statistics are taken over.
_GROUP_AXES = {"sample": (1, 3), "position": (3,), "channel": (1,), "batch": (0, 1, 3)}


def _groupnorm_forward(trial, *, groups="consecutive", axes="sample", ddof=0, eps_outside=False):
    view = _group_view(trial.x.shape, trial.num_groups, interleaved=groups == "interleaved")
    xhat_view = _standardize(
        view(trial.x), _GROUP_AXES[axes], trial.eps, ddof=ddof, eps_outside=eps_outside
    )
    return {"y": view(xhat_view, inverse=True) * trial.gamma + trial.beta}


def _groupnorm_backward(
    trial, *, terms="all", gamma_in_dxhat=True, dgamma="shared", dbeta="shared"
):
    _, cache = reference.group_norm_forward(
        trial.x, trial.num_groups, trial.gamma, trial.beta, trial.eps
    )
    xhat, rstd = cache[0], cache[1]  # (N, ..., C), (N, 1, G, 1)
    view = _group_view(trial.x.shape, trial.num_groups)
    return _gradients(
        trial, xhat, rstd, view, _GROUP_AXES["sample"],
        terms=terms, gamma_in_dxhat=gamma_in_dxhat, dgamma=dgamma, dbeta=dbeta,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# The exercises: what each function is called with, compared with, and may get wrong
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Switch:
    """One mistake: the keyword ``knob`` of a layer function above set to ``value``."""

    knob: str
    value: object
    mistake: str


@dataclass(frozen=True)
class _Stage:
    """One function of an exercise.

    ``arguments(trial, cache)`` are what the student's function is called with; it returns
    the values named ``returns`` ("cache" is handed to the next stage, not compared);
    ``reference(trial)`` gives the right outputs by name, from :mod:`normlab.reference`,
    and ``layer(trial, **knobs)`` the outputs with the mistakes of ``switches`` switched on.
    """

    function: str
    arguments: Callable
    returns: tuple[str, ...]
    reference: Callable
    layer: Callable
    switches: tuple[_Switch, ...]
    hints: dict[str, str]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(name for name in self.returns if name != "cache")


@dataclass(frozen=True)
class _Exercise:
    title: str
    trials: str  # which inputs: "token" (2-, 3-, 4-d, features last) or "group" (GroupNorm)
    stages: tuple[_Stage, ...]


_FORWARD_HINT = (
    "with γ = 1 and β = 0 the output has mean 0 and variance 1 over the axes the layer "
    "normalizes (up to ε); compute both over each axis of a trial's output and see which is off."
)
_DX_HINT = (
    "dx̂ = dy · γ, then dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) with both means over "
    "the axes of the statistics; compare a few entries with "
    "normlab.gradcheck.numerical_gradient on a small input and a random dy."
)
_PARAMETER_HINT = (
    "dγ = Σ dy · x̂ and dβ = Σ dy, summed over every axis but the last: the shape of γ."
)
_BACKWARD_HINTS = {"dx": _DX_HINT, "dgamma": _PARAMETER_HINT, "dbeta": _PARAMETER_HINT}
_RUNNING_HINT = (
    "running = (1 − momentum) · running + momentum · batch, the batch variance made unbiased "
    "(times n/(n − 1)) first."
)

_TERM_SWITCHES = (
    _Switch("terms", "no_mean", "backward_missing_mean_term"),
    _Switch("terms", "no_variance", "backward_missing_variance_term"),
    _Switch("terms", "direct", "backward_missing_both_terms"),
)
_GAMMA_SWITCH = _Switch("gamma_in_dxhat", False, "dxhat_without_gamma")
_DGAMMA_SWITCHES = (
    _Switch("dgamma", "first", "param_grads_over_first_axis_only"),
    _Switch("dgamma", "features", "param_grads_over_features"),
)
_DBETA_SWITCHES = (
    _Switch("dbeta", "first", "param_grads_over_first_axis_only"),
    _Switch("dbeta", "features", "param_grads_over_features"),
)
_UNBIASED = _Switch("ddof", 1, "unbiased_variance")
_EPS_OUTSIDE = _Switch("eps_outside", True, "eps_outside_sqrt")


def _passing(*names: str) -> Callable:
    """Arguments: the trial's fields ``names``, copied (a function may change its inputs)."""

    def arguments(trial, cache):
        return tuple(_copy(getattr(trial, name)) for name in names)

    return arguments


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _dy_and_cache(trial, cache):
    return trial.dy.copy(), cache


def _running_arguments(trial, cache):
    batch_mean, batch_var, count = trial.batch_statistics()
    return (
        trial.running_mean.copy(), trial.running_var.copy(), batch_mean, batch_var, count,
        trial.momentum,
    )  # fmt: skip


def _forward_stage(function, arguments, reference_forward, layer, switches, hint=_FORWARD_HINT):
    return _Stage(
        function=function,
        arguments=_passing(*arguments),
        returns=("y", "cache"),
        reference=lambda trial: {"y": reference_forward(trial)[0]},
        layer=layer,
        switches=switches,
        hints={"y": hint},
    )


def _backward_stage(function, reference_forward, reference_backward, layer, switches, returns):
    def right(trial):
        _, cache = reference_forward(trial)
        return dict(zip(returns, reference_backward(trial.dy, cache), strict=True))

    hints = {name: _BACKWARD_HINTS[name] for name in returns}
    return _Stage(function, _dy_and_cache, returns, right, layer, switches, hints)


def _batchnorm_reference(trial):
    return reference.batch_norm_forward(trial.x, trial.gamma, trial.beta, trial.eps)


def _batchnorm_eval_reference(trial):
    return reference.batch_norm_eval_forward(
        trial.x, trial.running_mean, trial.running_var, trial.gamma, trial.beta, trial.eps
    )


def _layernorm_reference(trial):
    return reference.layer_norm_forward(trial.x, trial.gamma, trial.beta, trial.eps)


def _rmsnorm_reference(trial):
    return reference.rms_norm_forward(trial.x, trial.gamma, trial.eps)


def _groupnorm_reference(trial):
    return reference.group_norm_forward(
        trial.x, trial.num_groups, trial.gamma, trial.beta, trial.eps
    )


def _running_reference(trial):
    running_mean, running_var, _ = reference.batch_norm_running_stats(
        trial.x, trial.running_mean, trial.running_var, 0, momentum=trial.momentum
    )
    return {"running_mean": running_mean, "running_var": running_var}


_GRADIENTS = ("dx", "dgamma", "dbeta")
_AFFINE = ("x", "gamma", "beta", "eps")

_EXERCISES: dict[str, _Exercise] = {
    "batchnorm": _Exercise(
        "BatchNorm, training mode",
        "token",
        (
            _forward_stage(
                "batchnorm_forward", _AFFINE, _batchnorm_reference, _batchnorm_forward,
                (
                    _Switch("axes", "features", "batchnorm_over_features"),
                    _Switch("axes", "first", "batchnorm_over_first_axis_only"),
                    _UNBIASED, _EPS_OUTSIDE,
                ),
            ),
            _backward_stage(
                "batchnorm_backward", _batchnorm_reference, reference.batch_norm_backward,
                _batchnorm_backward,
                (*_TERM_SWITCHES, _GAMMA_SWITCH, *_DGAMMA_SWITCHES, *_DBETA_SWITCHES), _GRADIENTS,
            ),
        ),
    ),
    "running_update": _Exercise(
        "BatchNorm's running statistics",
        "token",
        (
            _Stage(
                "running_update",
                _running_arguments,
                ("running_mean", "running_var"),
                _running_reference,
                _running_update,
                (
                    _Switch("bessel", False, "running_var_not_bessel_corrected"),
                    _Switch("convention", "keras", "keras_momentum"),
                ),
                {"running_mean": _RUNNING_HINT, "running_var": _RUNNING_HINT},
            ),
        ),
    ),
    "batchnorm_eval": _Exercise(
        "BatchNorm, eval mode",
        "token",
        (
            _forward_stage(
                "batchnorm_eval_forward",
                ("x", "running_mean", "running_var", "gamma", "beta", "eps"),
                _batchnorm_eval_reference, _batchnorm_eval_forward,
                (_Switch("statistics", "batch", "eval_with_batch_statistics"), _EPS_OUTSIDE),
                hint="y = γ · (x − running_mean) / sqrt(running_var + ε) + β, feature by feature.",
            ),
            _backward_stage(
                "batchnorm_eval_backward", _batchnorm_eval_reference,
                reference.batch_norm_eval_backward, _batchnorm_eval_backward,
                (
                    _Switch("terms", "all", "eval_backward_through_statistics"),
                    _GAMMA_SWITCH, *_DGAMMA_SWITCHES, *_DBETA_SWITCHES,
                ),
                _GRADIENTS,
            ),
        ),
    ),
    "layernorm": _Exercise(
        "LayerNorm",
        "token",
        (
            _forward_stage(
                "layernorm_forward", _AFFINE, _layernorm_reference, _layernorm_forward,
                (
                    _Switch("axes", "batch", "layernorm_over_batch"),
                    _Switch("axes", "sample", "layernorm_over_whole_sample"),
                    _UNBIASED, _EPS_OUTSIDE,
                ),
            ),
            _backward_stage(
                "layernorm_backward", _layernorm_reference, reference.layer_norm_backward,
                _layernorm_backward,
                (*_TERM_SWITCHES, _GAMMA_SWITCH, *_DGAMMA_SWITCHES, *_DBETA_SWITCHES), _GRADIENTS,
            ),
        ),
    ),
    "rmsnorm": _Exercise(
        "RMSNorm",
        "token",
        (
            _forward_stage(
                "rmsnorm_forward", ("x", "gamma", "eps"), _rmsnorm_reference, _rmsnorm_forward,
                (
                    _Switch("center", True, "rmsnorm_centering"),
                    _Switch("axes", "batch", "rmsnorm_over_batch"),
                    _EPS_OUTSIDE,
                ),
                hint="with γ = 1 the output has mean square 1 over the last axis (up to ε), and "
                "keeps the sign pattern of x.",
            ),
            _backward_stage(
                "rmsnorm_backward", _rmsnorm_reference, reference.rms_norm_backward,
                _rmsnorm_backward,
                (
                    _Switch("terms", "all", "rmsnorm_backward_mean_term"),
                    _Switch("terms", "direct", "backward_missing_variance_term"),
                    _GAMMA_SWITCH, *_DGAMMA_SWITCHES,
                ),
                ("dx", "dgamma"),
            ),
        ),
    ),
    "groupnorm": _Exercise(
        "GroupNorm",
        "group",
        (
            _forward_stage(
                "groupnorm_forward", ("x", "num_groups", "gamma", "beta", "eps"),
                _groupnorm_reference, _groupnorm_forward,
                (
                    _Switch("groups", "interleaved", "groupnorm_interleaved_groups"),
                    _Switch("axes", "position", "groupnorm_per_position"),
                    _Switch("axes", "channel", "groupnorm_per_channel"),
                    _Switch("axes", "batch", "groupnorm_across_batch"),
                    _UNBIASED, _EPS_OUTSIDE,
                ),
                hint="view x as (N, positions, G, C/G) with x.reshape(N, -1, G, C // G): one "
                "mean and variance per sample and group, over axes (1, 3) of that view.",
            ),
            _backward_stage(
                "groupnorm_backward", _groupnorm_reference, reference.group_norm_backward,
                _groupnorm_backward,
                (*_TERM_SWITCHES, _GAMMA_SWITCH, *_DGAMMA_SWITCHES, *_DBETA_SWITCHES), _GRADIENTS,
            ),
        ),
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def check_batchnorm(batchnorm_forward, batchnorm_backward) -> Report:
    """Check BatchNorm in training mode (statistics of the batch, over every axis but the last).

    ``batchnorm_forward(x, gamma, beta, eps) -> (y, cache)`` and
    ``batchnorm_backward(dy, cache) -> (dx, dgamma, dbeta)``, on (N, D), (N, T, D) and
    (N, H, W, C) inputs: ``y = γ · (x − μ) / sqrt(σ² + ε) + β`` with μ and the biased σ²
    of each feature over the batch.
    """
    return _check("batchnorm", (batchnorm_forward, batchnorm_backward))


def check_running_update(running_update) -> Report:
    """Check ``running_update(running_mean, running_var, batch_mean, batch_var, n, momentum)``.

    It returns the new ``(running_mean, running_var)``, PyTorch's convention:
    ``running = (1 − momentum) · running + momentum · batch``, where the batch's variance
    (given biased, as the forward computed it, over ``n`` values per feature) is stored
    unbiased, ``batch_var · n / (n − 1)``.
    """
    return _check("running_update", (running_update,))


def check_batchnorm_eval(batchnorm_eval_forward, batchnorm_eval_backward) -> Report:
    """Check BatchNorm in eval mode: the running statistics are constants.

    ``batchnorm_eval_forward(x, running_mean, running_var, gamma, beta, eps) -> (y, cache)``
    computes ``γ · (x − running_mean) / sqrt(running_var + ε) + β``;
    ``batchnorm_eval_backward(dy, cache) -> (dx, dgamma, dbeta)``.
    """
    return _check("batchnorm_eval", (batchnorm_eval_forward, batchnorm_eval_backward))


def check_layernorm(layernorm_forward, layernorm_backward) -> Report:
    """Check LayerNorm over the last axis.

    ``layernorm_forward(x, gamma, beta, eps) -> (y, cache)`` with the mean and biased
    variance of each token's features; ``layernorm_backward(dy, cache) -> (dx, dgamma, dbeta)``.
    """
    return _check("layernorm", (layernorm_forward, layernorm_backward))


def check_rmsnorm(rmsnorm_forward, rmsnorm_backward) -> Report:
    """Check RMSNorm over the last axis: ``y = γ · x / sqrt(mean(x²) + ε)``, no mean, no β.

    ``rmsnorm_forward(x, gamma, eps) -> (y, cache)`` and
    ``rmsnorm_backward(dy, cache) -> (dx, dgamma)``.
    """
    return _check("rmsnorm", (rmsnorm_forward, rmsnorm_backward))


def check_groupnorm(groupnorm_forward, groupnorm_backward) -> Report:
    """Check GroupNorm: per sample, over the positions and a group of consecutive channels.

    ``groupnorm_forward(x, num_groups, gamma, beta, eps) -> (y, cache)`` on (N, C),
    (N, L, C) and (N, H, W, C) inputs, channel c in group ``c // (C // num_groups)``;
    ``groupnorm_backward(dy, cache) -> (dx, dgamma, dbeta)``.
    """
    return _check("groupnorm", (groupnorm_forward, groupnorm_backward))


def _check(name: str, functions: Sequence[Callable]) -> Report:
    exercise = _EXERCISES[name]
    trials = _trials(exercise.trials)
    stages: list[StageReport] = []
    caches = [None] * len(trials)
    for stage, function in zip(exercise.stages, functions, strict=True):
        if stages and not stages[-1].passed:
            message = f"{stages[-1].function} must pass first (this gets its cache)"
            stages.append(StageReport(stage.function, NOT_CHECKED, message=message))
            continue
        report, caches = _check_stage(stage, function, trials, caches)
        stages.append(report)
    return Report(exercise.title, tuple(stages), tuple(trial.shape for trial in trials))


def _check_stage(stage: _Stage, function, trials, caches):
    """The report on one function, and the caches it returned (one per trial)."""
    if function is None:
        return StageReport(stage.function, NOT_IMPLEMENTED, message="no function given"), caches
    returned_outputs, returned_caches = [], []
    for trial, cache in zip(trials, caches, strict=True):
        try:
            returned = function(*stage.arguments(trial, cache))
        except NotImplementedError:
            message = "it raises NotImplementedError"
            return StageReport(stage.function, NOT_IMPLEMENTED, message=message), caches
        except Exception as error:  # the student's code: report any exception, do not raise
            return StageReport(stage.function, RAISED, message=_describe(error, trial)), caches
        problem = _return_problem(stage, returned)
        if problem:
            return StageReport(stage.function, BAD_RETURN, message=problem), caches
        values = dict(zip(stage.returns, returned, strict=True))
        returned_caches.append(values.pop("cache", None))
        returned_outputs.append({key: np.asarray(value) for key, value in values.items()})
    expected = [stage.reference(trial) for trial in trials]
    wrong = [
        name
        for name in stage.outputs
        if not all(
            _same(got[name], right[name])
            for got, right in zip(returned_outputs, expected, strict=True)
        )
    ]
    if not wrong:
        return StageReport(stage.function, PASSED), returned_caches
    findings = _diagnose(stage, trials, returned_outputs, expected, wrong)
    status = MISTAKES_FOUND if any(finding.mistakes for finding in findings) else NO_KNOWN_MISTAKE
    return StageReport(stage.function, status, tuple(findings)), returned_caches


def _same(got: np.ndarray, right: np.ndarray) -> bool:
    """Same shape, finite, and within :data:`MATCH_TOLERANCE` relative error."""
    return (
        got.shape == right.shape
        and bool(np.all(np.isfinite(got)))
        and relative_error(got, right) <= MATCH_TOLERANCE
    )


def _return_problem(stage: _Stage, returned) -> str:
    expected = "(" + ", ".join(stage.returns) + ")"
    if not isinstance(returned, (tuple, list)) or len(returned) != len(stage.returns):
        got = (
            f"a tuple of {len(returned)}"
            if isinstance(returned, (tuple, list))
            else type(returned).__name__
        )
        return f"{stage.function} should return {expected}, got {got}"
    for name, value in zip(stage.returns, returned, strict=True):
        if name == "cache":
            continue
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.number):
            return f"{name} should be an array of numbers, got {type(value).__name__}"
    return ""


#: Where numpy and the standard library live: their frames are not the student's code.
_LIBRARY_PATHS = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _describe(error: Exception, trial: _Trial) -> str:
    """The exception, the input, and the line of the student's code it came from."""
    frames = traceback.extract_tb(error.__traceback__)[1:]  # [0] is the checker's call
    own = [frame for frame in frames if not frame.filename.startswith(_LIBRARY_PATHS)]
    where = f" at line {own[-1].lineno}: {own[-1].line}" if own else ""
    return f"{type(error).__name__}: {error}, on the {trial.shape} input{where}"


def _combinations(switches: Sequence[_Switch]) -> list[tuple[_Switch, ...]]:
    """Every set of at most :data:`MAX_MISTAKES_COMBINED` switches, at most one per knob,
    smallest sets first (in the order of ``switches`` within a size)."""
    knobs = list(dict.fromkeys(switch.knob for switch in switches))
    choices = [[None, *(s for s in switches if s.knob == knob)] for knob in knobs]
    combinations = [
        tuple(switch for switch in choice if switch is not None)
        for choice in itertools.product(*choices)
    ]
    combinations = [c for c in combinations if 1 <= len(c) <= MAX_MISTAKES_COMBINED]
    return sorted(combinations, key=len)


def _with_mistakes(stage: _Stage, trial: _Trial, combination: tuple[_Switch, ...]) -> dict:
    with np.errstate(all="ignore"):  # some combinations divide by zero: they match nothing
        return stage.layer(trial, **{switch.knob: switch.value for switch in combination})


def _diagnose(stage, trials, returned_outputs, expected, wrong) -> list[Finding]:
    """For each wrong output, the smallest set of known mistakes that reproduces it."""
    computed: dict[tuple[_Switch, ...], list[dict]] = {}
    explained: dict[tuple[str, ...], list[str]] = {}  # mistake keys -> the outputs they explain
    unexplained: list[str] = []
    for name in wrong:
        for combination in _combinations(stage.switches):
            if combination not in computed:
                computed[combination] = [_with_mistakes(stage, t, combination) for t in trials]
            if all(
                _same(got[name], mistaken[name])
                for got, mistaken in zip(returned_outputs, computed[combination], strict=True)
            ):
                keys = tuple(dict.fromkeys(switch.mistake for switch in combination))
                explained.setdefault(keys, []).append(name)
                break
        else:
            unexplained.append(name)
    findings = [
        Finding(tuple(outputs), tuple(MISTAKES[key] for key in keys))
        for keys, outputs in explained.items()
    ]
    findings += [
        Finding(
            (name,),
            where="no known mistake; " + _largest_error(name, trials, returned_outputs, expected),
            hint=stage.hints[name],
        )
        for name in unexplained
    ]
    return findings


def _largest_error(name, trials, returned_outputs, expected) -> str:
    worst = None  # (relative error, trial, got, right)
    for trial, got, right in zip(trials, returned_outputs, expected, strict=True):
        got, right = got[name], right[name]
        if got.shape != right.shape:
            return (
                f"{name} has shape {got.shape} where {right.shape} was expected "
                f"(the {trial.shape} input)"
            )
        if not np.all(np.isfinite(got)):
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
            return f"{name}{list(index)} is {got[index]} (the {trial.shape} input)"
        error = relative_error(got, right)
        if worst is None or error > worst[0]:
            worst = (error, trial, got, right)
    error, trial, got, right = worst
    index = np.unravel_index(np.argmax(np.abs(got - right)), got.shape) if got.ndim else ()
    index = tuple(int(i) for i in index)
    return (
        f"largest error at {name}{list(index)} of the {trial.shape} input: {got[index]:.6g} "
        f"where normlab.reference gives {right[index]:.6g} (relative error {error:.1e})"
    )


# ---------------------------------------------------------------------------
# How large each mistake is
# ---------------------------------------------------------------------------

#: A typical input for :func:`mistake_sizes`: a batch of 16 sequences of 8 tokens of 32
#: features (GroupNorm: 8 images of 4 x 4 pixels, 32 channels in 8 groups), PyTorch's
#: ε = 1e-5 and momentum = 0.1.
_TYPICAL_SHAPE, _TYPICAL_GROUP_SHAPE, _TYPICAL_GROUPS = (16, 8, 32), (8, 4, 4, 32), 8
_TYPICAL_EPS, _TYPICAL_MOMENTUM = 1e-5, 0.1
#: The values per statistic of panel (b): from 2 to 4096.
_COUNTS = tuple(2**power for power in range(1, 13))
#: The layer (a :data:`normlab.plotting.METHODS` key) of each exercise, for the colours.
_EXERCISE_METHODS = {
    "batchnorm": "batch",
    "running_update": "batch",
    "batchnorm_eval": "batch",
    "layernorm": "layer",
    "rmsnorm": "rms",
    "groupnorm": "group",
}


def _largest_change(stage: _Stage, trial: _Trial, switch: _Switch) -> float:
    """The largest relative error ``switch`` causes in any output of ``stage`` at ``trial``."""
    right, mistaken = stage.reference(trial), _with_mistakes(stage, trial, (switch,))
    return max(
        1.0
        if right[name].shape != mistaken[name].shape
        else relative_error(mistaken[name], right[name])
        for name in stage.outputs
    )


def mistake_sizes(seed: int = 0) -> dict:
    """How much each known mistake changes the numbers on a typical input, and against n.

    ``"typical"``: for every mistake (in the first exercise it can happen in), the
    largest relative error it causes in an output, on the input described at
    ``_TYPICAL_SHAPE``. ``"counts"``, ``"unbiased_variance"``,
    ``"running_var_not_bessel_corrected"``: the relative error of BatchNorm's output
    with the unbiased variance, and of the running variance without Bessel's
    correction (momentum 1, so it is the batch's own estimate), for batches of ``n``
    values per feature; both fall as 1/n.
    """
    rng = np.random.default_rng([_SEED, seed])
    typical = {
        "token": _draw_trial(rng, _TYPICAL_SHAPE, _TYPICAL_EPS, momentum=_TYPICAL_MOMENTUM),
        "group": _draw_trial(rng, _TYPICAL_GROUP_SHAPE, _TYPICAL_EPS, num_groups=_TYPICAL_GROUPS),
    }
    sizes: dict[str, dict] = {}
    for exercise_name, exercise in _EXERCISES.items():
        for stage in exercise.stages:
            for switch in stage.switches:
                change = _largest_change(stage, typical[exercise.trials], switch)
                entry = sizes.setdefault(switch.mistake, {"exercise": exercise_name, "size": 0.0})
                if entry["exercise"] == exercise_name:
                    entry["size"] = max(entry["size"], change)
    batch_stages = _EXERCISES["batchnorm"].stages[0], _EXERCISES["running_update"].stages[0]
    by_count: dict[str, list[float]] = {key: [] for key in ("unbiased_variance", "running")}
    for count in _COUNTS:
        trial = _draw_trial(rng, (count, _TYPICAL_SHAPE[-1]), _TYPICAL_EPS, momentum=1.0)
        by_count["unbiased_variance"].append(_largest_change(batch_stages[0], trial, _UNBIASED))
        by_count["running"].append(
            _largest_change(batch_stages[1], trial, batch_stages[1].switches[0])
        )
    return {
        "typical": sizes,
        "counts": list(_COUNTS),
        "unbiased_variance": by_count["unbiased_variance"],
        "running_var_not_bessel_corrected": by_count["running"],
    }


@plotting.styled
def plot_mistake_sizes(sizes: dict) -> Figure:
    """(a) each mistake's relative error on a typical input; (b) the two that fall with n."""
    figure, (typical_ax, count_ax) = plotting.subplots(
        1, 2, width=15.0, height=8.5, gridspec_kw={"width_ratios": (1.5, 1)}
    )
    entries = sorted(sizes["typical"].items(), key=lambda item: item[1]["size"])
    positions = np.arange(len(entries))
    for position, (_, entry) in zip(positions, entries, strict=True):
        method = _EXERCISE_METHODS[entry["exercise"]]
        typical_ax.barh(position, entry["size"], color=plotting.method_style(method)["color"])
    typical_ax.set_yticks(positions, [MISTAKES[key].name for key, _ in entries], fontsize=10)
    typical_ax.set_xscale("log")
    typical_ax.axvline(MATCH_TOLERANCE, color=plotting.REFERENCE_COLOR, linestyle="--")
    typical_ax.annotate(
        "the checker's tolerance", (MATCH_TOLERANCE, len(entries) - 0.5), xytext=(4, 0),
        textcoords="offset points", color=plotting.REFERENCE_COLOR, fontsize=11,
    )  # fmt: skip
    typical_ax.set_xlabel("largest relative error in an output")
    typical_ax.set_title("(a) each mistake on a typical input", loc="left")
    typical_ax.legend(
        handles=[
            Patch(color=plotting.method_style(method)["color"], label=plotting.method_label(method))
            for method in ("batch", "layer", "rms", "group")
        ],
        loc="lower right",
        ncols=2,
    )
    counts = np.asarray(sizes["counts"], dtype=float)
    batch_colour = plotting.method_style("batch")["color"]
    count_ax.loglog(
        counts, sizes["unbiased_variance"], marker="o", color=batch_colour,
        label="unbiased variance: y",
    )  # fmt: skip
    count_ax.loglog(
        counts, sizes["running_var_not_bessel_corrected"], marker="s", color=batch_colour,
        linestyle="-.", label="no Bessel: running_var",
    )  # fmt: skip
    plotting.reference_line(count_ax, counts, 1 / counts, label="1/n")
    plotting.reference_line(count_ax, counts, 0.5 / counts, label="1/(2n)", linestyle=":")
    count_ax.set_xlabel("values per feature in the batch, n")
    count_ax.set_ylabel("relative error")
    count_ax.set_title("(b) BatchNorm's variance mistakes", loc="left")
    count_ax.legend(loc="lower left")
    plotting.set_title(
        figure,
        "How much does each mistake change the numbers?",
        "(a) BatchNorm, LayerNorm, RMSNorm on (16, 8, 32), GroupNorm on (8, 4, 4, 32) with 8 "
        "groups; ε = 1e-5, momentum 0.1, random γ, β and dy; colour: the layer of the first "
        "exercise the mistake can happen in. (b) BatchNorm on (n, 32); running_var with "
        "momentum 1.",
    )
    return figure


# ---------------------------------------------------------------------------
# Solutions notebooks
# ---------------------------------------------------------------------------


def lesson_setup(lesson: str) -> SimpleNamespace:
    """Run a lesson's set-up and return what it defines: how a solutions notebook starts.

    The set-up is the lesson's code before its first section heading: its parameters,
    imports and data (see :mod:`normlab.handouts`). The solutions then answer the
    exercises with the lesson's own parameters and data, and follow it when it changes::

        lesson = lesson_setup("01_what_each_method_normalizes")
        x, dy, D = lesson.x, lesson.dy, lesson.D

    ``lesson`` is the lesson's file name without ``.ipynb``, or its number (``"01"``).
    The cells run in a namespace of their own; in a notebook their line magics
    (``%matplotlib inline``) run too, elsewhere they are skipped (they only set up the
    notebook's display).
    """
    from IPython import get_ipython
    from IPython.core.inputtransformer2 import TransformerManager

    from normlab import handouts

    shell = get_ipython()
    namespace: dict = {"__name__": "__lesson_setup__", "get_ipython": get_ipython}
    for source in handouts.setup_sources(handouts.lesson_path(lesson)):
        if shell is None:
            source = "\n".join(
                line for line in source.splitlines() if not line.lstrip().startswith("%")
            )
        code = TransformerManager().transform_cell(source)
        exec(compile(code, f"<set-up of {lesson}>", "exec"), namespace)
    return SimpleNamespace(
        **{
            name: value
            for name, value in namespace.items()
            if not name.startswith("_") and name != "get_ipython"
        }
    )
