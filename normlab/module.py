"""The one module interface of normlab, and the argument checks every module shares.

Every layer and model in normlab -- the normalization layers, ``Linear``, the models in
:mod:`normlab.nn` -- is a :class:`Module` with the same few members::

    y = module(x, mask=None)       # the forward pass (same as module.forward(x, mask=None))
    dx = module.backward(dy)       # gradient w.r.t. the last forward's input; fills grads
    module.params                  # name -> ndarray: the learned parameters (γ, β, W, ...)
    module.grads                   # name -> ndarray: filled by backward, empty before it
    module.train(); module.eval()  # module.training is the mode flag
    module.state_dict()            # parameters and buffers, in PyTorch's names and layouts
    module.load_state_dict(state)  # ... and back, e.g. from a torch module's state_dict()

Inputs are features-last: (N, D) vectors, (N, T, D) sequences, (N, H, W, C) images. A
padding ``mask`` of shape ``x.shape[:-1]`` (True = real token) is accepted by every module.

Gradients are *overwritten* by each backward, never accumulated (PyTorch accumulates into
``.grad``). A name is missing from ``grads`` until a backward has computed it, as PyTorch's
``.grad`` is None before the first backward: "no gradient yet" never reads as "zero".

The argument checks at the bottom of this page are the only ones: every module validates its
constructor arguments and inputs with them, so the same mistake gives the same message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from numbers import Integral, Real

import numpy as np

__all__ = [
    "Container",
    "Identity",
    "Module",
    "as_float_array",
    "as_generator",
    "check_axes",
    "check_eps",
    "check_mask",
    "check_positive_int",
    "float_dtype",
]

CHANNELS_FIRST_HINT = (
    " normlab is features-last; for channels-first data (N, C, ...) as in PyTorch, "
    "pass np.moveaxis(x, 1, -1)."
)


# ---------------------------------------------------------------------------
# The module interface
# ---------------------------------------------------------------------------


class Module:
    """Base class: forward/backward, ``params``/``grads``, the mode flag, state in torch names.

    A subclass registers its parameters with :meth:`add_param` in ``__init__``, implements
    :meth:`forward` (storing what the backward needs in ``self._cache``) and
    :meth:`backward` (storing parameter gradients with :meth:`set_grad`). Modules made of
    other modules derive from :class:`Container` instead.

    Attributes
    ----------
    params : dict of str -> ndarray
        Learned parameters. Optimizers update these arrays in place, so replace a value
        in place (``params["weight"][...] = w``), not by assigning a new array.
    grads : dict of str -> ndarray
        Gradients with the keys and shapes of ``params``, overwritten by each
        :meth:`backward`; a key is absent until a backward has computed it.
    training : bool
        True after construction; set by :meth:`train` / :meth:`eval`. Only modules whose
        computation depends on it (BatchNorm) behave differently.
    """

    #: True if a per-feature bias added to this module's input is cancelled exactly by it
    #: (whatever its value), so the layer before it needs none: see Norm.cancels_feature_bias.
    cancels_feature_bias = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self._cache = None
        self._param_shapes: dict[str, tuple[int, ...]] = {}

    # -- parameters ------------------------------------------------------------

    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        """Register a learned parameter; its shape is checked before every forward."""
        self.params[name] = value
        self._param_shapes[name] = value.shape
        return value

    def check_params(self) -> None:
        """Raise ValueError if a parameter was replaced by an array of another shape."""
        for name, shape in self._param_shapes.items():
            value = self.params.get(name)
            if value is None:
                raise KeyError(
                    f"{type(self).__name__}: params[{name!r}] is missing; it was removed "
                    "after construction."
                )
            if np.shape(value) != shape:
                raise ValueError(
                    f"{type(self).__name__}: params[{name!r}] must have shape {shape}, got "
                    f"{np.shape(value)}; assign in place with params[{name!r}][...] = value."
                )

    def set_grad(self, name: str, grad: np.ndarray) -> None:
        """Store the gradient of ``params[name]`` with the parameter's shape and dtype."""
        param = self.params[name]
        self.grads[name] = grad.reshape(param.shape).astype(param.dtype, copy=False)

    # -- forward and backward --------------------------------------------------

    def __call__(self, x, mask=None) -> np.ndarray:
        return self.forward(x, mask=mask)

    def forward(self, x, mask=None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy) -> np.ndarray:
        raise NotImplementedError

    def require_cache(self):
        """What the last forward stored for the backward; RuntimeError if there was none."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward was called before any forward call."
            )
        return self._cache

    # -- mode ------------------------------------------------------------------

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or inference mode, here and in every child."""
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        """Set inference mode; returns the module. Same as ``train(False)``."""
        return self.train(False)

    # -- structure -------------------------------------------------------------

    def named_children(self) -> tuple[tuple[str, Module], ...]:
        """The direct sub-modules with their names (none for a single layer)."""
        return ()

    def modules(self) -> Iterator[Module]:
        """This module and every module inside it, depth first, in order."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -- state in PyTorch's names and layouts ----------------------------------

    def torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        """``value`` of parameter ``name`` in the layout torch stores it (default: the same)."""
        return value

    def from_torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`torch_layout`."""
        return value

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-learned state torch keeps in ``state_dict`` (BatchNorm's running statistics)."""
        return {}

    def load_buffer(self, name: str, value: np.ndarray) -> None:
        """Set the buffer ``name`` from ``value`` (checked by :meth:`load_state_dict`)."""
        raise KeyError(name)

    def _own_state(self, grads: bool) -> dict[str, np.ndarray]:
        state = {}
        for name in self._param_shapes:
            if grads:
                if name not in self.grads:
                    raise RuntimeError(
                        f"{type(self).__name__} has no gradient for {name!r} yet; call "
                        "backward after a forward first."
                    )
                value = self.grads[name]
            else:
                value = self.params[name]
            state[name] = np.array(self.torch_layout(name, value))
        if not grads:
            state.update({name: np.array(value) for name, value in self.buffers().items()})
        return state

    def state_dict(self, *, grads: bool = False) -> dict[str, np.ndarray]:
        """Parameters and buffers as numpy arrays, named and laid out as torch's ``state_dict``.

        ``state_dict(grads=True)`` gives the last backward's parameter gradients under the
        same names and layouts (no buffers). The arrays are copies.

        >>> import normlab as nl
        >>> sorted(nl.BatchNorm(3).state_dict())
        ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
        """
        state = self._own_state(grads)
        for child_name, child in self.named_children():
            for name, value in child.state_dict(grads=grads).items():
                state[f"{child_name}.{name}"] = value
        return state

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Set parameters and buffers from ``state`` (torch names and layouts), in place.

        ``state`` maps names to arrays (or anything ``np.asarray`` takes, such as the CPU
        tensors of ``torch_module.state_dict()``). Every entry of :meth:`state_dict` must be
        present with its shape and no other entry may be: otherwise a ValueError lists the
        missing, unexpected and wrongly shaped entries and nothing is changed.
        """
        expected = self.state_dict()
        given = {name: np.asarray(value) for name, value in state.items()}
        missing = [name for name in expected if name not in given]
        unexpected = [name for name in given if name not in expected]
        wrong = [
            f"{name}: expected shape {expected[name].shape}, got {given[name].shape}"
            for name in expected
            if name in given and given[name].shape != expected[name].shape
        ]
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unexpected:
            problems.append(f"unexpected {unexpected}")
        if wrong:
            problems.append("wrong shape: " + "; ".join(wrong))
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        self._load(given, prefix="")

    def _load(self, state: dict[str, np.ndarray], prefix: str) -> None:
        for name in self._param_shapes:
            self.params[name][...] = self.from_torch_layout(name, state[prefix + name])
        for name in self.buffers():
            self.load_buffer(name, state[prefix + name])
        for child_name, child in self.named_children():
            child._load(state, prefix=f"{prefix}{child_name}.")


class _FlatView(Mapping):
    """A live, read-only flat dict over the ``params`` (or ``grads``) of named children.

    ``view["2.bias"]`` looks up ``children["2"].params["bias"]`` at the moment of the call,
    so a layer that replaces a gradient array in its own ``grads`` dict is seen by an
    optimizer holding the view. Nested containers give nested names
    (``"block0.mix.weight_self"``).
    """

    def __init__(self, named_children: Sequence[tuple[str, Module]], attribute: str) -> None:
        self._named_children = tuple(named_children)
        self._by_name = dict(self._named_children)
        self._attribute = attribute

    def _entries(self, child) -> Mapping:
        return getattr(child, self._attribute)

    def __getitem__(self, key: str) -> np.ndarray:
        child_name, separator, rest = key.partition(".")
        if not separator or child_name not in self._by_name:
            raise KeyError(key)
        return self._entries(self._by_name[child_name])[rest]

    def __iter__(self) -> Iterator[str]:
        for child_name, child in self._named_children:
            for key in self._entries(child):
                yield f"{child_name}.{key}"

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs in one walk over the children (faster than key lookups)."""
        for child_name, child in self._named_children:
            for key, value in self._entries(child).items():
                yield f"{child_name}.{key}", value

    def __len__(self) -> int:
        return sum(len(self._entries(child)) for _, child in self._named_children)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{key!r}: {value.shape}" for key, value in self.items())
        return f"{{{shapes}}}"


class Container(Module):
    """A module made of named children; its ``params``/``grads`` are flat live views over theirs.

    Names join with dots, as in PyTorch: a child ``"0"`` with a parameter ``"weight"``
    gives ``"0.weight"``. :meth:`train`, :meth:`eval`, :meth:`state_dict` and
    :meth:`load_state_dict` reach every child.
    """

    def __init__(self, named_children: Sequence[tuple[str, Module]]) -> None:
        super().__init__()
        named_children = tuple(named_children)
        names = [name for name, _ in named_children]
        for name in names:
            if not name or "." in name:
                raise ValueError(f"child names must be non-empty and without '.', got {name!r}.")
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}.")
        for name, child in named_children:
            if not isinstance(child, Module):
                raise TypeError(
                    f"{type(self).__name__}: child {name!r} must be a normlab Module, "
                    f"got {type(child).__name__}."
                )
        self._named_children = named_children
        self._params_view = _FlatView(named_children, "params")
        self._grads_view = _FlatView(named_children, "grads")

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        return self._params_view

    @params.setter
    def params(self, value) -> None:  # Module.__init__ assigns {}: a container has none of its own
        if value:
            raise AttributeError("a Container's params are those of its children")

    @property
    def grads(self) -> Mapping[str, np.ndarray]:
        return self._grads_view

    @grads.setter
    def grads(self, value) -> None:
        if value:
            raise AttributeError("a Container's grads are those of its children")

    def named_children(self) -> tuple[tuple[str, Module], ...]:
        return self._named_children

    def check_params(self) -> None:
        for _, child in self._named_children:
            child.check_params()

    def __repr__(self) -> str:
        lines = [
            f"  ({name}): {child!r}".replace("\n", "\n  ") for name, child in self._named_children
        ]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Identity(Module):
    """``y = x``: the "no normalization" kind of :func:`normlab.make_norm`. ``mask`` is ignored."""

    def __repr__(self) -> str:
        return "Identity()"

    def forward(self, x, mask=None) -> np.ndarray:
        return as_float_array(x, "Identity")

    def backward(self, dy) -> np.ndarray:
        return dy


# ---------------------------------------------------------------------------
# Argument checks (each raises before any state is touched)
# ---------------------------------------------------------------------------


def check_positive_int(value, what: str, who: str) -> int:
    """``value`` as an int if it is a positive integer, else a ValueError naming it."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{who}: {what} must be a positive integer, got {value!r}.")
    return int(value)


def check_axes(axes, ndim: int, who: str) -> tuple[int, ...]:
    """``axes`` (an int or a sequence of ints, negative counting from the end) as a sorted
    tuple of non-negative axes of an ``ndim``-dimensional array, as numpy users write them."""
    if isinstance(axes, Integral) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        given = tuple(axes)
    except TypeError:
        raise TypeError(f"{who}: axes must be an int or a tuple of ints, got {axes!r}.") from None
    resolved = []
    for axis in given:
        if not isinstance(axis, Integral) or isinstance(axis, bool):
            raise TypeError(f"{who}: axes must be an int or a tuple of ints, got {given!r}.")
        if not -ndim <= axis < ndim:
            raise np.exceptions.AxisError(
                f"{who}: axis {axis} is out of bounds for an array of {ndim} dimensions."
            )
        resolved.append(int(axis) % ndim)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{who}: repeated axis in {given!r}.")
    return tuple(sorted(resolved))


def check_eps(eps, who: str, *, allow_zero: bool = False) -> float:
    """``eps`` as a float if it is a number > 0 (or ≥ 0 with ``allow_zero``)."""
    valid = isinstance(eps, Real) and not isinstance(eps, bool)
    valid = valid and (eps >= 0 if allow_zero else eps > 0) and np.isfinite(eps)
    if not valid:
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: eps must be a finite number {bound}, got {eps!r}.")
    return float(eps)


def float_dtype(dtype, who: str) -> np.dtype:
    """``dtype`` as a numpy dtype if it is floating, else a TypeError."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{who}: dtype must be a floating dtype, got {dtype}.")
    return dtype


def as_float_array(x, who: str, what: str = "input") -> np.ndarray:
    """``x`` as an ndarray if its dtype is floating, else a TypeError saying how to convert.

    An ndarray subclass passes through as itself (``np.asanyarray``), so an instrumented
    array (one that counts the operations it takes part in) reaches the computation.
    """
    x = np.asanyarray(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{who} expects a floating-point {what}, got dtype {x.dtype}; "
            f"convert it first, e.g. {what.split()[0]}.astype(np.float32)."
        )
    return x


def check_mask(mask, x_shape: tuple[int, ...], who: str) -> np.ndarray | None:
    """A boolean mask of shape ``x_shape[:-1]`` (True = real token), or None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"{who}: mask must be a boolean array (True = real token), got dtype "
            f"{mask.dtype}; use mask.astype(bool)."
        )
    if mask.shape != x_shape[:-1]:
        raise ValueError(
            f"{who}: mask must have shape x.shape[:-1] = {x_shape[:-1]}, got {mask.shape}."
        )
    return mask


def as_generator(rng, who: str) -> np.random.Generator:
    """The explicit source of randomness: a Generator, or an int seed turned into one.

    There is no hidden global seed: every function that draws random numbers takes
    ``rng``, and ``who`` names it in the error for anything else.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{who}: rng must be a np.random.Generator or an int seed, got {rng!r}; "
        "pass e.g. rng=np.random.default_rng(0)."
    )
