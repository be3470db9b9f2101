"""Multi-head self-attention on (N, T, D), with padding masks and causal masking.

The computation, for one head of width ``d = D / H`` (``x`` the (T, D) rows of one sequence)::

    q, k, v = x W_q + b_q, x W_k + b_k, x W_v + b_v      # (T, d) each
    S = q kᵀ / √d                                        # (T, T) scores
    S[t, s] = -inf where key s is hidden from query t    # padding, and s > t if causal
    P = softmax(S) along s                               # (T, T), each row sums to 1
    head = P v                                           # (T, d)

and the heads, concatenated back to (T, D), go through one output projection. The
backward runs the same steps in reverse; the only non-obvious one is the softmax's,
``dS = P * (dP - rowsum(dP * P))``.
"""

from __future__ import annotations

import math

import numpy as np

from normlab.functional import reduce_sum, reduce_sum_product
from normlab.module import (
    Module,
    as_float_array,
    as_generator,
    check_mask,
    check_positive_int,
    float_dtype,
)

__all__ = ["MultiheadAttention", "visible_keys"]


def visible_keys(mask: np.ndarray | None, length: int, causal: bool) -> np.ndarray | None:
    """Which keys each query may attend to: bool (N, T, T) or (T, T), or None for "all".

    ``visible[n, t, s]`` is True when query ``t`` of sequence ``n`` sees key ``s``: the key
    is a real token (``mask[n, s]``) and, if ``causal``, not in the future (``s <= t``).
    Every query also sees itself, so that no row of the softmax is empty: a real query
    sees itself anyway (it is a real key, and ``t <= t``), and a padded query's output is
    set to 0 afterwards whatever it attended to.
    """
    if mask is None and not causal:
        return None
    visible = np.ones((length, length), dtype=bool)
    if causal:
        visible = np.tril(visible)  # s <= t
    if mask is not None:
        visible = visible & mask[:, None, :]  # (N, T, T): only real keys
        visible |= np.eye(length, dtype=bool)  # every row sees at least itself
    return visible


class MultiheadAttention(Module):
    """Multi-head self-attention (Vaswani et al., 2017), torch's ``nn.MultiheadAttention``.

    .. math::

        \\mathrm{head}_h = \\mathrm{softmax}\\Big(\\frac{(x W_q^h)(x W_k^h)^\\top}{\\sqrt{d}}
            + M\\Big)\\, x W_v^h, \\qquad
        y = [\\mathrm{head}_1, \\dots, \\mathrm{head}_H]\\, W_o + b_o

    (biases of q, k, v left out), with ``d = embed_dim / num_heads`` and ``M`` 0 where a
    key is visible and ``-inf`` where it is not: padded keys (``mask`` False) and, with
    ``causal=True``, keys after the query. Self-attention only: queries, keys and
    values all come from ``x``; the same computation as torch's
    ``MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)`` called as
    ``mha(x, x, x, key_padding_mask=~mask, attn_mask=causal_mask, need_weights=False)``
    with no dropout.

    Padding can have any pattern (holes too, not only at the end). Padded keys are
    never attended to; outputs and input gradients at padded positions are exactly 0,
    and a gradient arriving at a padded output is ignored (torch leaves padded outputs
    as whatever their query computed).

    Parameters
    ----------
    embed_dim : int, D, the width of the input and output.
    num_heads : int, H, which must divide ``embed_dim``.
    bias : bool, default True: biases of the q/k/v and output projections.
    causal : bool, default False: query ``t`` sees keys ``s <= t`` only.
    rng : np.random.Generator or int seed.
        torch's initialization: the q/k/v weight Glorot-uniform over its (3D, D) shape,
        ``U(±sqrt(6 / (D + 3D)))``; the output weight ``U(±1/sqrt(D))`` (``nn.Linear``'s
        default); both biases 0.
    dtype : floating dtype, default float32.

    Attributes
    ----------
    params : dict, named as in torch's state_dict:
        ``"in_proj_weight"`` (D, 3D), the columns ``[W_q | W_k | W_v]``, so ``x @ W`` reads
        left to right (torch stores the transpose, (3D, D); :meth:`state_dict` converts);
        ``"in_proj_bias"`` (3D,); ``"out_proj.weight"`` (D, D) as (in, out) (torch: its
        transpose); ``"out_proj.bias"`` (D,).
    attention_weights : (N, H, T, T) ndarray, the softmax ``P`` of the last forward
        (rows of padded queries are meaningless; their outputs are 0).

    Shape
    -----
    Input (N, T, D), mask (N, T) with True = real token; output (N, T, D).

    Examples
    --------
    >>> import numpy as np
    >>> attention = MultiheadAttention(8, 2, causal=True, rng=0)
    >>> x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    >>> attention(x).shape
    (3, 5, 8)
    >>> bool(np.allclose(np.triu(attention.attention_weights, k=1), 0))   # no future keys
    True
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        *,
        causal: bool = False,
        rng,
        dtype=np.float32,
    ) -> None:
        super().__init__()
        who = "MultiheadAttention"
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", who)
        self.num_heads = check_positive_int(num_heads, "num_heads", who)
        if self.embed_dim % self.num_heads:
            divisors = [h for h in range(1, self.embed_dim + 1) if self.embed_dim % h == 0]
            raise ValueError(
                f"{who}: embed_dim={self.embed_dim} must be divisible by num_heads="
                f"{self.num_heads} (each head gets embed_dim // num_heads features); "
                f"num_heads can be one of {divisors}."
            )
        self.head_dim = self.embed_dim // self.num_heads
        self.bias = bool(bias)
        self.causal = bool(causal)
        self.dtype = float_dtype(dtype, who)
        rng = as_generator(rng, who)
        width = self.embed_dim
        in_limit = math.sqrt(6.0 / (width + 3 * width))
        out_limit = 1.0 / math.sqrt(width)
        in_weight = rng.uniform(-in_limit, in_limit, size=(width, 3 * width))
        out_weight = rng.uniform(-out_limit, out_limit, size=(width, width))
        self.add_param("in_proj_weight", in_weight.astype(self.dtype))
        if self.bias:
            self.add_param("in_proj_bias", np.zeros(3 * width, dtype=self.dtype))
        self.add_param("out_proj.weight", out_weight.astype(self.dtype))
        if self.bias:
            self.add_param("out_proj.bias", np.zeros(width, dtype=self.dtype))

    def __repr__(self) -> str:
        return (
            f"MultiheadAttention({self.embed_dim}, {self.num_heads}, bias={self.bias}, "
            f"causal={self.causal})"
        )

    _TRANSPOSED_IN_TORCH = ("in_proj_weight", "out_proj.weight")

    def torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.T if name in self._TRANSPOSED_IN_TORCH else value  # torch: (out, in)

    def from_torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.T if name in self._TRANSPOSED_IN_TORCH else value

    @property
    def attention_weights(self) -> np.ndarray:
        """The softmax ``P`` (N, H, T, T) of the last forward."""
        return self.require_cache()["weights"]

    def _check_input(self, x) -> np.ndarray:
        x = as_float_array(x, "MultiheadAttention")
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"MultiheadAttention expects input (N, T, embed_dim={self.embed_dim}), got "
                f"shape {x.shape}; for one sequence use x[None]."
            )
        return x

    def forward(self, x, mask=None) -> np.ndarray:
        x = self._check_input(x)
        mask = check_mask(mask, x.shape, "MultiheadAttention")
        self.check_params()
        batch, length, width = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        if mask is not None:
            x = np.where(mask[..., None], x, x.dtype.type(0))  # padding enters no product
        rows = x.reshape(-1, width)  # (M, D), M = N·T
        qkv = rows @ self.params["in_proj_weight"]  # (M, 3D)
        if self.bias:
            qkv += self.params["in_proj_bias"]
        qkv = qkv.reshape(batch, length, 3, heads, head_dim)  # a view
        scale = qkv.dtype.type(1.0 / math.sqrt(head_dim))
        query = qkv[:, :, 0].transpose(0, 2, 1, 3) * scale  # (N, H, T, d), scaled once
        key = qkv[:, :, 1].transpose(0, 2, 1, 3)  # (N, H, T, d), a view
        value = qkv[:, :, 2].transpose(0, 2, 1, 3)  # (N, H, T, d), a view
        scores = query @ key.transpose(0, 1, 3, 2)  # (N, H, T, T): S = q kᵀ / √d
        visible = visible_keys(mask, length, self.causal)  # (N, T, T), (T, T) or None
        if visible is not None:
            # 0 where visible, -inf where hidden: a lookup, which (unlike np.where) does not
            # branch on the irregular pattern of padding
            hidden = np.array([-np.inf, 0.0], dtype=scores.dtype)[visible.view(np.uint8)]
            scores += hidden[:, None] if hidden.ndim == 3 else hidden  # over the heads
        # softmax along the keys, stably: exp(S - max S) <= 1; hidden keys give exactly 0
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores, out=scores)  # (N, H, T, T), in place
        weights *= 1 / reduce_sum(weights, (3,))  # (N, H, T, 1) sums, each >= 1
        heads_out = weights @ value  # (N, H, T, d)
        context = heads_out.transpose(0, 2, 1, 3).reshape(-1, width)  # (M, D): heads side by side
        y = context @ self.params["out_proj.weight"]  # (M, D)
        if self.bias:
            y += self.params["out_proj.bias"]
        y = y.reshape(batch, length, width)
        if mask is not None:
            y *= mask[..., None]  # padded queries: exactly 0
        self._cache = {
            "rows": rows,
            "query": query,
            "key": key,
            "value": value,
            "weights": weights,
            "context": context,
            "mask": mask,
            "scale": scale,
            "shape": x.shape,
        }
        return y

    def backward(self, dy) -> np.ndarray:
        cache = self.require_cache()
        batch, length, width = cache["shape"]
        heads, head_dim = self.num_heads, self.head_dim
        dy = as_float_array(dy, "MultiheadAttention.backward", what="dy (upstream gradient)")
        if dy.shape != cache["shape"]:
            raise ValueError(
                f"MultiheadAttention.backward: dy must have the shape of the last output "
                f"{cache['shape']}, got {dy.shape}."
            )
        mask = cache["mask"]
        if mask is not None:
            dy = np.where(mask[..., None], dy, dy.dtype.type(0))  # padded outputs are constants
        dy_rows = dy.reshape(-1, width)  # (M, D)
        self.set_grad("out_proj.weight", cache["context"].T @ dy_rows)  # (D, D)
        if self.bias:
            self.set_grad("out_proj.bias", dy_rows.sum(axis=0))
        dcontext = dy_rows @ self.params["out_proj.weight"].T  # (M, D)
        dheads = dcontext.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)
        weights, query, key, value = (cache[k] for k in ("weights", "query", "key", "value"))
        dvalue = weights.transpose(0, 1, 3, 2) @ dheads  # (N, H, T, d): Pᵀ dhead
        dweights = dheads @ value.transpose(0, 1, 3, 2)  # (N, H, T, T): dhead vᵀ
        # softmax backward: dS = P * (dP - Σ_s dP·P), row by row
        row_sums = reduce_sum_product(dweights, weights, (3,))  # (N, H, T, 1)
        dscores = dweights
        dscores -= row_sums
        dscores *= weights
        dquery = (dscores @ key) * cache["scale"]  # (N, H, T, d): through S = (q/√d) kᵀ
        dkey = dscores.transpose(0, 1, 3, 2) @ query  # (N, H, T, d): query is already scaled
        dqkv = np.empty((batch, length, 3, heads, head_dim), dtype=dscores.dtype)
        for index, part in enumerate((dquery, dkey, dvalue)):
            dqkv[:, :, index] = part.transpose(0, 2, 1, 3)  # back to (N, T, H, d)
        dqkv_rows = dqkv.reshape(-1, 3 * width)  # (M, 3D)
        self.set_grad("in_proj_weight", cache["rows"].T @ dqkv_rows)  # (D, 3D)
        if self.bias:
            self.set_grad("in_proj_bias", dqkv_rows.sum(axis=0))
        # At padded positions dqkv is exactly 0 (their outputs sent nothing back, and as keys
        # their weights were exactly 0), so dx is too.
        return (dqkv_rows @ self.params["in_proj_weight"].T).reshape(batch, length, width)
