"""Convolution and pooling on features-last images (N, H, W, C): torch's Conv2d and pools.

* :class:`Conv2d`: cross-correlation with a learned kernel, computed as *im2col*: every
  receptive field becomes one row of a matrix and the whole layer is one matrix product.
* :class:`MaxPool2d`: the largest value of each window; the gradient goes to the first
  largest entry of the window, as in torch.
* :class:`GlobalAvgPool2d`: the mean over all positions, (N, H, W, C) -> (N, C).

The definition with explicit loops over positions, the page to read first, is
:func:`normlab.reference.conv2d_forward_naive` (the tests compare the two).

Images are features-last, (N, H, W, C), where torch is channels-first (N, C, H, W):
``np.moveaxis(x, 1, -1)`` converts, and a shape error says so. The parameters follow torch
at the edge: ``state_dict()["weight"]`` has torch's shape (out, in, kH, kW).
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from numpy.lib.stride_tricks import as_strided

from normlab._fastsum import reduce_sum
from normlab.module import (
    CHANNELS_FIRST_HINT,
    Module,
    as_float_array,
    as_generator,
    check_positive_int,
    float_dtype,
)

__all__ = ["Conv2d", "GlobalAvgPool2d", "MaxPool2d", "conv_output_size"]


# ---------------------------------------------------------------------------
# Shared pieces: argument and input checks, output size, windows
# ---------------------------------------------------------------------------


def _pair(value, what: str, who: str, *, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, as torch takes them) as a (height, width) pair."""
    pair = (value, value) if isinstance(value, Integral) else value
    bound = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
    valid = isinstance(pair, (tuple, list)) and len(pair) == 2
    valid = valid and all(isinstance(v, Integral) and not isinstance(v, bool) for v in pair)
    if not valid or min(pair) < minimum:
        raise ValueError(f"{who}: {what} must be {bound} or a pair of them, got {value!r}.")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Positions a window of ``kernel`` fits at along an axis: ``(size + 2p - k) // s + 1``.

    The same rule for convolution and pooling (torch's floor mode): positions
    left over at the end, too few for another step of ``stride``, are not covered.

    >>> conv_output_size(8, 3, 1, 1), conv_output_size(8, 2, 2), conv_output_size(7, 2, 2)
    (8, 4, 3)
    """
    return (size + 2 * padding - kernel) // stride + 1


def _check_images(x, who: str, channels: int | None = None) -> np.ndarray:
    """``x`` as a floating (N, H, W, C) array, else a ValueError/TypeError naming the fix."""
    x = as_float_array(x, who)
    if x.ndim != 4:
        hint = " For one image use x[None]." if x.ndim == 3 else ""
        raise ValueError(
            f"{who} expects images (N, H, W, C), got an array of shape {x.shape} "
            f"({x.ndim} dims).{hint}"
        )
    if channels is not None and x.shape[-1] != channels:
        hint = CHANNELS_FIRST_HINT if x.shape[1] == channels else ""
        raise ValueError(
            f"{who} expected the last dimension to be in_channels={channels}, got "
            f"{x.shape[-1]} (input shape {x.shape}).{hint}"
        )
    return x


def _check_no_mask(mask, who: str) -> None:
    if mask is not None:
        raise ValueError(
            f"{who} takes no padding mask (every position of an image is real), got a mask "
            f"of shape {np.shape(mask)}; call it without one."
        )


def _check_upstream(dy, expected_shape: tuple[int, ...], who: str) -> np.ndarray:
    dy = as_float_array(dy, who, what="dy (upstream gradient)")
    if dy.shape != expected_shape:
        raise ValueError(
            f"{who}.backward: dy must have the shape of the last forward's output "
            f"{expected_shape}, got {dy.shape}."
        )
    return dy


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Every window of ``x`` (N, H, W, C) as a read-only view (N, Ho, Wo, kH, kW, C), no copy.

    ``view[n, h, w, i, j, c] = x[n, h * sH + i, w * sW + j, c]``: the window axes repeat
    the strides of H and W, the position axes step them by the stride.
    """
    batch, height, width, channels = x.shape
    out_height = conv_output_size(height, kernel[0], stride[0])
    out_width = conv_output_size(width, kernel[1], stride[1])
    step_n, step_h, step_w, step_c = x.strides
    return as_strided(
        x,
        shape=(batch, out_height, out_width, kernel[0], kernel[1], channels),
        strides=(step_n, step_h * stride[0], step_w * stride[1], step_h, step_w, step_c),
        writeable=False,
    )


def _offset_view(array: np.ndarray, i: int, j: int, out_hw, stride) -> np.ndarray:
    """The entries that window offset (i, j) covers, one per output position: (N, Ho, Wo, C)."""
    (out_height, out_width), (stride_h, stride_w) = out_hw, stride
    return array[
        :,
        i : i + stride_h * (out_height - 1) + 1 : stride_h,
        j : j + stride_w * (out_width - 1) + 1 : stride_w,
    ]


# ---------------------------------------------------------------------------
# Conv2d
# ---------------------------------------------------------------------------


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in every deep-learning library) on (N, H, W, C).

    .. math::

        y[n, h, w, o] = b_o + \\sum_{i < k_H} \\sum_{j < k_W} \\sum_{c}
            x_{pad}[n,\\, s_H h + i,\\, s_W w + j,\\, c] \\; W[o, c, i, j]

    where ``x_pad`` is ``x`` with ``padding`` zeros on each side of H and W. Each output
    position sees one kH×kW window of all C_in channels; the same kernel slides over the
    image with step ``stride``.

    Computed as im2col: the windows, a strided *view* of the padded input, are copied
    once into a matrix ``cols`` of shape (N·Ho·Wo, kH·kW·C_in), one row per receptive
    field, and ``y = cols @ W`` is one matrix product. The backward reuses ``cols``:

    .. math::

        \\frac{\\partial L}{\\partial W} = \\mathrm{cols}^\\top \\frac{\\partial L}{\\partial y},
        \\qquad
        \\frac{\\partial L}{\\partial b} = \\sum_{n,h,w} \\frac{\\partial L}{\\partial y},
        \\qquad
        \\frac{\\partial L}{\\partial x} = \\mathrm{col2im}\\Big(\\frac{\\partial L}{\\partial y}
            W^\\top\\Big)

    where col2im adds each window's gradient back onto the positions it came from. It is
    done per kernel offset (i, j): the gradient of every window's entry (i, j) is one
    (N·Ho·Wo, C_in) matrix product, added to the shifted, strided block of the padded
    input it covers (long contiguous runs, so numpy's adds stay fast).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zeros added on both sides of H and W.
    bias : bool, default True
    rng : np.random.Generator or int seed (keyword-only)
        The only source of randomness: ``weight`` and ``bias`` are drawn from
        U(-1/√fan_in, 1/√fan_in), ``fan_in = in_channels·kH·kW``, torch's default
        (``kaiming_uniform_(a=√5)`` for the weight; the same bound for the bias).
    dtype : floating dtype, default float32 (the parameters').

    Attributes
    ----------
    params : ``"weight"`` of shape (kH, kW, C_in, C_out), so that ``cols @ W`` reads left
        to right; torch stores (C_out, C_in, kH, kW), which :meth:`state_dict` and
        :meth:`load_state_dict` convert to and from. ``"bias"`` (C_out,) when enabled.
    grads : the same keys and shapes, overwritten by each :meth:`backward`.

    Shape
    -----
    Input (N, H, W, C_in); output (N, Ho, Wo, C_out) with
    ``Ho = (H + 2·padding - kH) // stride + 1`` (:func:`conv_output_size`), the same for W.
    ``normlab.nn.Conv2d`` on (N, H, W, C) equals ``torch.nn.Conv2d`` on (N, C, H, W). There is
    no padding mask: every position of an image is real.

    Examples
    --------
    >>> import numpy as np
    >>> conv = Conv2d(1, 4, kernel_size=3, padding=1, rng=0)
    >>> conv(np.zeros((2, 8, 8, 1), dtype=np.float32)).shape
    (2, 8, 8, 4)
    >>> conv.state_dict()["weight"].shape   # torch's layout (out, in, kH, kW)
    (4, 1, 3, 3)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        bias: bool = True,
        *,
        rng,
        dtype=np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = check_positive_int(out_channels, "out_channels", "Conv2d")
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d", minimum=1)
        self.stride = _pair(stride, "stride", "Conv2d", minimum=1)
        self.padding = _pair(padding, "padding", "Conv2d", minimum=0)
        rng = as_generator(rng, "Conv2d")
        self.dtype = float_dtype(dtype, "Conv2d")
        kernel_height, kernel_width = self.kernel_size
        fan_in = self.in_channels * kernel_height * kernel_width
        bound = 1.0 / math.sqrt(fan_in)
        torch_shape = (self.out_channels, self.in_channels, kernel_height, kernel_width)
        weight = rng.uniform(-bound, bound, size=torch_shape)  # drawn in torch's layout
        weight = self.from_torch_layout("weight", weight)  # a transposed view
        self.add_param("weight", np.ascontiguousarray(weight, dtype=self.dtype))
        if bias:
            self.add_param("bias", rng.uniform(-bound, bound, self.out_channels).astype(self.dtype))
        self._cache = None

    def __repr__(self) -> str:
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params})"
        )

    def torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        # (kH, kW, C_in, C_out) -> torch's (C_out, C_in, kH, kW)
        return value.transpose(3, 2, 0, 1) if name == "weight" else value

    def from_torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        # torch's (C_out, C_in, kH, kW) -> (kH, kW, C_in, C_out)
        return value.transpose(2, 3, 1, 0) if name == "weight" else value

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(N, Ho, Wo, C_out) for an input of shape (N, H, W, C_in)."""
        batch, height, width, _ = input_shape
        sizes = zip((height, width), self.kernel_size, self.stride, self.padding, strict=True)
        out_height, out_width = (conv_output_size(*size) for size in sizes)
        return batch, out_height, out_width, self.out_channels

    def _padded(self, x: np.ndarray) -> np.ndarray:
        pad_h, pad_w = self.padding
        if pad_h == pad_w == 0:
            return x
        batch, height, width, channels = x.shape
        padded = np.zeros((batch, height + 2 * pad_h, width + 2 * pad_w, channels), x.dtype)
        padded[:, pad_h : pad_h + height, pad_w : pad_w + width] = x
        return padded

    def forward(self, x, mask=None) -> np.ndarray:
        x = _check_images(x, "Conv2d", self.in_channels)
        _check_no_mask(mask, "Conv2d")
        self.check_params()
        (pad_h, pad_w), (kernel_h, kernel_w) = self.padding, self.kernel_size
        padded_hw = (x.shape[1] + 2 * pad_h, x.shape[2] + 2 * pad_w)
        if padded_hw[0] < kernel_h or padded_hw[1] < kernel_w:
            raise ValueError(
                f"Conv2d: kernel_size {self.kernel_size} is larger than the padded input "
                f"{padded_hw} (input H, W = {x.shape[1:3]} plus padding {self.padding} on "
                "each side); use a smaller kernel or more padding."
            )
        output_shape = self.output_shape(x.shape)
        weight = self.params["weight"].astype(x.dtype, copy=False)  # (kH, kW, C_in, C_out)
        # every receptive field, a view (N, Ho, Wo, kH, kW, C_in) of the padded input
        windows = _windows(self._padded(x), self.kernel_size, self.stride)
        cols = windows.reshape(-1, weight[..., 0].size)  # (N·Ho·Wo, kH·kW·C_in): the one copy
        y = cols @ weight.reshape(-1, self.out_channels)  # (N·Ho·Wo, C_out)
        if "bias" in self.params:
            y += self.params["bias"].astype(x.dtype, copy=False)
        self._cache = (cols, x.shape, output_shape)
        return y.reshape(output_shape)

    def backward(self, dy) -> np.ndarray:
        cols, input_shape, output_shape = self.require_cache()
        dy = _check_upstream(dy, output_shape, "Conv2d")
        batch, out_height, out_width, _ = output_shape
        (kernel_h, kernel_w), (pad_h, pad_w) = self.kernel_size, self.padding
        dy_rows = dy.reshape(-1, self.out_channels)  # (N·Ho·Wo, C_out)
        self.set_grad("weight", cols.T @ dy_rows)  # (kH·kW·C_in, C_out)
        if "bias" in self.params:
            self.set_grad("bias", reduce_sum(dy_rows, (0,)))  # (C_out,), as one BLAS call

        # col2im, one kernel offset at a time: the gradient of entry (i, j) of every window
        weight = self.params["weight"].astype(dy.dtype, copy=False)
        per_offset = weight.reshape(kernel_h * kernel_w, self.in_channels, self.out_channels)
        window_grads = np.matmul(dy_rows, per_offset.transpose(0, 2, 1))  # (kH·kW, N·Ho·Wo, C_in)
        _, height, width, channels = input_shape
        dx_padded = np.zeros((batch, height + 2 * pad_h, width + 2 * pad_w, channels), dy.dtype)
        out_hw = (out_height, out_width)
        for i in range(kernel_h):
            for j in range(kernel_w):
                block = _offset_view(dx_padded, i, j, out_hw, self.stride)  # (N, Ho, Wo, C_in)
                block += window_grads[i * kernel_w + j].reshape(block.shape)
        return dx_padded[:, pad_h : pad_h + height, pad_w : pad_w + width]  # (N, H, W, C_in)


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


class MaxPool2d(Module):
    """The largest value of each kH×kW window of every channel (torch's ``MaxPool2d``).

    .. math::  y[n, h, w, c] = \\max_{i < k_H,\\ j < k_W} x[n,\\, s_H h + i,\\, s_W w + j,\\, c]

    No parameters. The gradient of each output goes to the one input that was chosen: the
    *first* largest value of the window in row-major order (i, then j) when several tie
    -- as in torch, and it matters here because after a ReLU whole windows are 0. A window
    holding NaN outputs NaN and sends its gradient to its last NaN, also as torch does.

    Computed one window offset at a time over all windows at once: the output is the
    running maximum, and the offset that holds it is kept (a small integer per output)
    for the backward, which adds ``dy`` back at exactly those offsets.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size`` (non-overlapping windows)

    Shape
    -----
    Input (N, H, W, C); output (N, Ho, Wo, C), ``Ho = (H - kH) // stride + 1`` (torch's
    floor mode: rows and columns at the end that do not fill a window are dropped, and get
    a zero gradient). No padding mask.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> MaxPool2d(2)(x)[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """

    def __init__(self, kernel_size, stride=None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", "MaxPool2d", minimum=1)
        if stride is None:
            stride = self.kernel_size
        self.stride = _pair(stride, "stride", "MaxPool2d", minimum=1)
        self._cache = None

    def __repr__(self) -> str:
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride})"

    def forward(self, x, mask=None) -> np.ndarray:
        x = _check_images(x, "MaxPool2d")
        _check_no_mask(mask, "MaxPool2d")
        kernel_h, kernel_w = self.kernel_size
        if x.shape[1] < kernel_h or x.shape[2] < kernel_w:
            raise ValueError(
                f"MaxPool2d: kernel_size {self.kernel_size} is larger than the input's "
                f"H, W = {x.shape[1:3]} (input shape {x.shape}); no window fits."
            )
        out_hw = (
            conv_output_size(x.shape[1], kernel_h, self.stride[0]),
            conv_output_size(x.shape[2], kernel_w, self.stride[1]),
        )
        offsets = [(i, j) for i in range(kernel_h) for j in range(kernel_w)]
        best = np.array(_offset_view(x, 0, 0, out_hw, self.stride))  # (N, Ho, Wo, C), a copy
        winner = np.zeros(best.shape, dtype=np.min_scalar_type(len(offsets) - 1))
        # Products and maxima instead of np.where / masked copies: these branch on every
        # element, which is slow on masks without a pattern.
        for index, (i, j) in enumerate(offsets[1:], start=1):
            candidate = _offset_view(x, i, j, out_hw, self.stride)  # (N, Ho, Wo, C)
            larger = candidate > best  # strictly: on a tie the earlier offset stays the winner
            np.maximum(best, candidate, out=best)  # NaN propagates
            np.maximum(winner, larger * winner.dtype.type(index), out=winner)  # index grows
        if best.size and np.isnan(best.max()):  # some window holds NaN
            self._nan_wins(x, winner, offsets, out_hw)
        self._cache = (winner, x.shape)
        return best

    def _nan_wins(self, x, winner, offsets, out_hw) -> None:
        """torch's rule for a window holding NaN: its gradient goes to the last NaN."""
        for index, (i, j) in enumerate(offsets):
            is_nan = np.isnan(_offset_view(x, i, j, out_hw, self.stride))  # (N, Ho, Wo, C)
            np.copyto(winner, index, where=is_nan)

    def backward(self, dy) -> np.ndarray:
        winner, input_shape = self.require_cache()
        dy = _check_upstream(dy, winner.shape, "MaxPool2d")
        dx = np.zeros(input_shape, dtype=dy.dtype)
        out_hw = winner.shape[1:3]
        kernel_h, kernel_w = self.kernel_size
        overlapping = self.stride[0] < kernel_h or self.stride[1] < kernel_w
        for index in range(kernel_h * kernel_w):
            i, j = divmod(index, kernel_w)
            block = _offset_view(dx, i, j, out_hw, self.stride)  # (N, Ho, Wo, C)
            if overlapping:  # an input may be the winner of several windows: add up
                block += dy * (winner == index)
            else:  # each input is in one window at most: write in place
                np.multiply(dy, winner == index, out=block)
        return dx


class GlobalAvgPool2d(Module):
    """The mean of each channel over all positions: (N, H, W, C) -> (N, C).

    .. math::  y[n, c] = \\frac{1}{HW} \\sum_{h, w} x[n, h, w, c], \\qquad
        \\frac{\\partial L}{\\partial x[n, h, w, c]} = \\frac{1}{HW}
        \\frac{\\partial L}{\\partial y[n, c]}

    No parameters. torch's ``nn.AdaptiveAvgPool2d(1)`` followed by ``flatten(1)`` (or
    ``x.mean((2, 3))``) on (N, C, H, W). Ending a CNN with it leaves no spatial axes for
    the classifier, so a ``Linear`` head sees the same (N, C) in both libraries and needs
    no channels-first flattening.

    Examples
    --------
    >>> import numpy as np
    >>> GlobalAvgPool2d()(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[3., 4.]])
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "GlobalAvgPool2d()"

    def forward(self, x, mask=None) -> np.ndarray:
        x = _check_images(x, "GlobalAvgPool2d")
        _check_no_mask(mask, "GlobalAvgPool2d")
        self._cache = x.shape
        return x.mean(axis=(1, 2))  # (N, C)

    def backward(self, dy) -> np.ndarray:
        input_shape = self.require_cache()
        batch, height, width, channels = input_shape
        dy = _check_upstream(dy, (batch, channels), "GlobalAvgPool2d")
        dx = np.empty(input_shape, dtype=dy.dtype)
        dx[...] = (dy / (height * width))[:, None, None, :]  # every position gets an equal share
        return dx
