"""A lookup table of learned vectors, indexed by integer ids (torch's ``nn.Embedding``)."""

from __future__ import annotations

import numpy as np

from normlab.module import Module, as_generator, check_mask, check_positive_int, float_dtype

__all__ = ["Embedding", "check_ids_mask", "check_token_ids"]


def check_token_ids(ids, num_embeddings: int, who: str, mask=None) -> np.ndarray:
    """``ids`` as an integer ndarray whose real entries lie in ``[0, num_embeddings)``.

    A non-integer array is a TypeError and an id out of range a ValueError naming the
    range and the offending values. Entries where ``mask`` is False (padding) are not
    checked: any integer may stand there.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(
            f"{who} expects integer token ids, got dtype {ids.dtype}; convert them first, "
            "e.g. ids.astype(np.int64) (ids are indices into the table, not values)."
        )
    real = ids if mask is None else ids[mask]
    if real.size and (real.min() < 0 or real.max() >= num_embeddings):
        bad = np.unique(real[(real < 0) | (real >= num_embeddings)])
        raise ValueError(
            f"{who}: token ids must lie in [0, {num_embeddings}) (num_embeddings="
            f"{num_embeddings}), got {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}."
        )
    return ids


def check_ids_mask(mask, ids_shape: tuple[int, ...], who: str) -> np.ndarray | None:
    """A boolean mask of the ids' shape (True = real token), or None."""
    if mask is not None and np.shape(mask) != ids_shape:
        raise ValueError(
            f"{who}: mask must have the shape of the token ids {ids_shape}, got {np.shape(mask)}."
        )
    return check_mask(mask, (*ids_shape, 1), who)


class Embedding(Module):
    """A table of ``num_embeddings`` learned vectors: ``y[..., :] = weight[ids[...]]``.

    .. math::  y_{t} = W_{i_t}, \\qquad
        \\frac{\\partial L}{\\partial W_k}
            = \\sum_{t:\\, i_t = k} \\frac{\\partial L}{\\partial y_t}

    The backward adds up the gradients of every position that looked up row ``k``, so a
    character seen 40 times in a batch gets the sum of 40 gradients.
    The same module holds learned positions: ``Embedding(context_length, d_model)``
    indexed by ``np.arange(T)``.

    Parameters
    ----------
    num_embeddings : int, the size of the table (the vocabulary, or the longest position + 1).
    embedding_dim : int, the length of each vector.
    rng : np.random.Generator or int seed.
        ``weight ~ N(0, 1)``, torch's initialization of ``nn.Embedding``.
    dtype : floating dtype, default float32.

    Attributes
    ----------
    params : ``{"weight": (num_embeddings, embedding_dim)}``, the layout torch stores.

    Shape
    -----
    Input: integer ids of any shape (*); output (*, embedding_dim). With a ``mask`` of the
    ids' shape (True = real token), the outputs at padded positions are exactly 0, their ids
    are not looked up (any integer may stand there) and their gradients are ignored. The
    input is a set of indices, so :meth:`backward` fills ``grads`` and returns None.

    Examples
    --------
    >>> import numpy as np
    >>> table = Embedding(10, 4, rng=0)
    >>> table(np.array([[1, 2, 1]])).shape
    (1, 3, 4)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, rng, dtype=np.float32) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "Embedding")
        self.dtype = float_dtype(dtype, "Embedding")
        rng = as_generator(rng, "Embedding")
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim))
        self.add_param("weight", weight.astype(self.dtype))

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def forward(self, ids, mask=None) -> np.ndarray:
        ids = np.asarray(ids)
        mask = check_ids_mask(mask, ids.shape, "Embedding")
        ids = check_token_ids(ids, self.num_embeddings, "Embedding", mask)
        self.check_params()
        if mask is not None:
            ids = np.where(mask, ids, 0)  # padding: any valid row, zeroed below
        y = self.params["weight"][ids]  # (*, D): a gathered copy
        if mask is not None:
            y *= mask[..., None]
        self._cache = (ids, mask)
        return y

    def backward(self, dy) -> None:
        ids, mask = self.require_cache()
        dy = np.asarray(dy)
        if dy.shape != (*ids.shape, self.embedding_dim):
            raise ValueError(
                f"Embedding.backward: dy must have the shape of the last output "
                f"{(*ids.shape, self.embedding_dim)}, got {dy.shape}."
            )
        dy_rows = dy.reshape(-1, self.embedding_dim)  # (M, D)
        id_rows = ids.reshape(-1)  # (M,)
        if mask is not None:
            real = mask.reshape(-1)
            dy_rows, id_rows = dy_rows[real], id_rows[real]  # padding sends nothing back
        self.set_grad("weight", _sum_rows_by_id(dy_rows, id_rows, self.params["weight"]))
        return None


def _sum_rows_by_id(rows: np.ndarray, ids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[k] = Σ rows[m] over m with ids[m] = k``, zeros elsewhere; out like ``weight``.

    The same as ``np.add.at(out, ids, rows)``, only faster: the rows are sorted by
    id (a stable sort, so the additions always come in the same order) and each run of one
    id is summed by ``np.add.reduceat``.
    """
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]  # (M,)
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    out = np.zeros_like(weight)
    if ids.size:
        out[sorted_ids[run_starts]] = np.add.reduceat(rows[order], run_starts, axis=0)
    return out
