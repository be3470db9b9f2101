"""What the numbers of a measurement depend on: the code half of every cache key.

A cached run must be recomputed when, and only when, code that can change its numbers
changed. :func:`code_hash` finds that code by reading the source (nothing is imported or
run), starting from the measurement function a sweep maps over:

1. In the function's own module, the top-level definitions it reaches: the function, every
   module-level function, class or constant its body names, what those name, and so on.
   Another function of the same module (an experiment's ``plot``) is not part of it.
2. Every normlab module that this reached code imports (by name: ``from normlab import
   functional as F`` and a use of ``F``), and everything those modules import from normlab,
   as whole modules. The modules that only draw or print (:data:`PRESENTATION_MODULES`)
   are left out: restyling a figure recomputes nothing.
3. Each piece is hashed as its syntax tree without docstrings (``ast.dump``), so comments,
   docstrings, blank lines and formatting never change a key; code does.

So editing ``running_stats.py`` leaves every other experiment's runs valid, editing its
``plot`` leaves its own runs valid too, and editing ``functional.py`` recomputes every
experiment that normalizes through it. Imports are followed at module granularity:
``from normlab import nn`` depends on all of ``normlab/nn`` (its ``__init__`` imports
every submodule).

>>> from normlab.experiments import variance_numerics
>>> dependencies(variance_numerics.measure_one)[:2]
['normlab._fastsum', 'normlab.functional']
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import hashlib
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "PRESENTATION_MODULES",
    "code_hash",
    "dependencies",
    "free_names",
    "module_hash",
    "reached_names",
]

#: normlab modules that cannot change a computed number: figures, the command line and
#: the registry of experiment names.
PRESENTATION_MODULES = frozenset(
    {"normlab.plotting", "normlab.cli", "normlab.__main__", "normlab.experiments"}
)

_PACKAGE = "normlab"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_BUILTINS = frozenset(dir(builtins))


# ---------------------------------------------------------------------------
# Reading modules
# ---------------------------------------------------------------------------


def _module_path(module: str, package_dir: Path) -> Path | None:
    """The source file of a normlab module name, or None if there is none."""
    parts = module.split(".")
    if parts[0] != _PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=256)
def _parse(path: Path, mtime_ns: int, size: int) -> ast.Module:  # a new tree after an edit
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _tree(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse(path, stat.st_mtime_ns, stat.st_size)


def _without_docstrings(node: ast.AST) -> ast.AST:
    """A copy of ``node`` with the docstring of every module, class and function removed."""
    node = copy.deepcopy(node)
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for inner in ast.walk(node):
        if isinstance(inner, documented) and inner.body and _is_string(inner.body[0]):
            inner.body = inner.body[1:] or [ast.Pass()]
    return node


def _is_string(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _dump(node: ast.AST) -> str:
    return ast.dump(_without_docstrings(node), annotate_fields=False)


# ---------------------------------------------------------------------------
# Imports: which normlab modules a piece of code names
# ---------------------------------------------------------------------------


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str | None:
    """The absolute name of ``from <dots><module> import ...`` inside ``importer``."""
    if level == 0:
        return module
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def _imported_modules(
    node: ast.AST, importer: str, is_package: bool, package_dir: Path
) -> dict[str, set[str]]:
    """``{bound name: normlab modules}`` for every normlab import in ``node``.

    ``from normlab import functional`` binds a submodule; ``from normlab.layers import
    make_norm`` binds a name of ``normlab.layers``; ``import normlab as nl`` binds the
    package (its ``__init__``) and ``import normlab.layers`` the package and the submodule.
    """
    bound: dict[str, set[str]] = {}
    for inner in ast.walk(node):
        if isinstance(inner, ast.Import):
            for alias in inner.names:
                if alias.name.split(".")[0] == _PACKAGE:
                    name = alias.asname or _PACKAGE
                    loaded = {alias.name} if alias.asname else {_PACKAGE, alias.name}
                    bound.setdefault(name, set()).update(loaded)
        elif isinstance(inner, ast.ImportFrom):
            source = _resolve(inner.module, inner.level, importer, is_package)
            if source is None or source.split(".")[0] != _PACKAGE:
                continue
            for alias in inner.names:
                submodule = f"{source}.{alias.name}"
                is_module = _module_path(submodule, package_dir) is not None
                bound.setdefault(alias.asname or alias.name, set()).add(
                    submodule if is_module else source
                )
    return bound


# ---------------------------------------------------------------------------
# Reachable top-level definitions of one module
# ---------------------------------------------------------------------------


def _bound_names(statement: ast.stmt) -> set[str]:
    """The module-level names a top-level statement defines."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    targets: list[ast.AST] = []
    if isinstance(statement, ast.Assign):
        targets = list(statement.targets)
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    names = set()
    for target in targets:
        names.update(node.id for node in ast.walk(target) if isinstance(node, ast.Name))
    return names


class _Scope(ast.NodeVisitor):
    """The names one scope reads and binds; nested scopes report their free names upward.

    Python's rule: a name bound anywhere in a function (a parameter, an assignment, a
    ``for`` target, an import) is local in all of it, so only the other names it reads
    can refer to module-level definitions. Annotations are skipped: with
    ``from __future__ import annotations`` they never run.
    """

    def __init__(self) -> None:
        self.reads: set[str] = set()
        self.binds: set[str] = set()
        self.declared_global: set[str] = set()

    # -- names ------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        (self.reads if isinstance(node.ctx, ast.Load) else self.binds).add(node.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.declared_global.update(node.names)

    visit_Nonlocal = visit_Global

    def visit_alias(self, node: ast.alias) -> None:  # imports bind names
        self.binds.add(node.asname or node.name.split(".")[0])

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.binds.add(node.name)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        return  # parameters are bound by the scope that owns them; annotations skipped

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    # -- nested scopes ----------------------------------------------------------

    def _defaults(self, arguments: ast.arguments) -> None:
        for default in (*arguments.defaults, *arguments.kw_defaults):
            if default is not None:
                self.visit(default)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.binds.add(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._defaults(node.args)
        self.reads |= free_names(node.body, _parameters(node.args))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._defaults(node.args)
        self.reads |= free_names([node.body], _parameters(node.args))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.binds.add(node.name)
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child)
        self.reads |= free_names(node.body, set(), is_class=True)

    def _comprehension(self, node, elements: list[ast.AST]) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        inner = _Scope()
        for generator in node.generators:
            inner.visit(generator.target)
            for condition in generator.ifs:
                inner.visit(condition)
        for generator in node.generators[1:]:
            inner.visit(generator.iter)
        for element in elements:
            inner.visit(element)
        self.reads |= inner.reads - inner.binds

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def _parameters(arguments: ast.arguments) -> set[str]:
    every = (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)
    names = {arg.arg for arg in every}
    names.update(arg.arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None)
    return names


def free_names(body: list[ast.AST], parameters: set[str], *, is_class: bool = False) -> set[str]:
    """The names a function (or class) body reads that it does not bind itself.

    In a class body the names it binds are not visible in its methods, so for a class
    only what the body itself reads is reduced by what it binds.
    """
    scope = _Scope()
    if is_class:
        nested = _Scope()
        for statement in body:
            (
                nested if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
            ).visit(statement)
        return (scope.reads - scope.binds) | nested.reads
    for statement in body:
        scope.visit(statement)
    local = (scope.binds | parameters) - scope.declared_global
    return scope.reads - local


def _names_read(statement: ast.stmt) -> set[str]:
    """Module-level names a top-level statement needs (its own bindings are not reads)."""
    scope = _Scope()
    scope.visit(statement)
    return scope.reads


def _is_docstring_or_import(statement: ast.stmt) -> bool:
    return _is_string(statement) or isinstance(statement, (ast.Import, ast.ImportFrom))


def reached_names(tree: ast.Module, roots: Iterable[str]) -> tuple[list[ast.stmt], set[str]]:
    """The top-level statements reachable from the names ``roots``, and every name they read.

    Statements that define nothing by name (a bare call, an ``if`` at module level) are
    always included: they run on import and may change anything.
    """
    definitions: dict[str, list[ast.stmt]] = {}
    always = []
    for statement in tree.body:
        names = _bound_names(statement)
        if names:
            for name in names:
                definitions.setdefault(name, []).append(statement)
        elif not _is_docstring_or_import(statement):
            always.append(statement)
    reached: list[ast.stmt] = []
    seen_statements: set[int] = set()
    names_read: set[str] = set()
    todo = list(roots)
    for statement in always:
        todo.extend(_names_read(statement))
        reached.append(statement)
        seen_statements.add(id(statement))
    seen_names: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen_names:
            continue
        seen_names.add(name)
        names_read.add(name)
        for statement in definitions.get(name, ()):
            if id(statement) not in seen_statements:
                seen_statements.add(id(statement))
                reached.append(statement)
                todo.extend(_names_read(statement))
    order = {id(statement): index for index, statement in enumerate(tree.body)}
    reached.sort(key=lambda statement: order[id(statement)])
    return reached, names_read


# ---------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------


def module_hash(module: str, package_dir: Path | None = None) -> str:
    """SHA-256 of one module's syntax tree without docstrings (comments never enter)."""
    package_dir = package_dir or _PACKAGE_DIR
    path = _module_path(module, package_dir)
    if path is None:
        raise ValueError(f"no source file for module {module!r} under {package_dir}")
    return hashlib.sha256(_dump(_tree(path)).encode("utf-8")).hexdigest()


def _closure(start: Iterable[str], package_dir: Path) -> list[str]:
    """``start`` and every normlab module they import, transitively (whole modules)."""
    found: set[str] = set()
    todo = [module for module in start if module not in PRESENTATION_MODULES]
    while todo:
        module = todo.pop()
        if module in found:
            continue
        path = _module_path(module, package_dir)
        if path is None:
            continue
        found.add(module)
        tree = _tree(path)
        imported = _imported_modules(tree, module, path.name == "__init__.py", package_dir)
        for modules in imported.values():
            todo.extend(name for name in modules if name not in PRESENTATION_MODULES)
    return sorted(found)


def _root(function: Callable) -> tuple[str, str]:
    """The module and top-level name of a measurement function (or callable object)."""
    target = function if inspect.isfunction(function) else type(function)
    return target.__module__, target.__qualname__.split(".")[0]


def _root_source(module: str, package_dir: Path) -> tuple[ast.Module, bool] | None:
    path = _module_path(module, package_dir)
    if path is not None:
        return _tree(path), path.name == "__init__.py"
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if file and Path(file).is_file():  # a test module or a script outside the package
        return _tree(Path(file)), Path(file).name == "__init__.py"
    return None


def _analyse(module: str, name: str, package_dir: Path) -> tuple[str, list[str]]:
    """(hash of the reached definitions, the normlab modules they depend on)."""
    source = _root_source(module, package_dir)
    if source is None:  # defined in a notebook or a console: no file to read
        return hashlib.sha256(f"{module}.{name}".encode()).hexdigest(), []
    tree, is_package = source
    reached, names = reached_names(tree, [name])
    used: set[str] = set()
    top_level = _imported_modules(tree, module, is_package, package_dir)
    for name in names - _BUILTINS:
        used.update(top_level.get(name, ()))
    for statement in reached:  # imports inside reached functions count whole
        for modules in _imported_modules(statement, module, is_package, package_dir).values():
            used.update(modules)
    own = "\n".join(_dump(statement) for statement in reached)
    return hashlib.sha256(own.encode("utf-8")).hexdigest(), _closure(used, package_dir)


def dependencies(function: Callable, package_dir: Path | None = None) -> list[str]:
    """The normlab modules (sorted names) whose code the numbers of ``function`` depend on.

    The function's own module appears only if reached code imports it from elsewhere;
    its own definitions are covered by :func:`code_hash` directly. ``package_dir``
    (default: this package's folder) is where the normlab sources are read from.
    """
    module, name = _root(function)
    return _analyse(module, name, package_dir or _PACKAGE_DIR)[1]


def code_hash(function: Callable, package_dir: Path | None = None) -> str:
    """SHA-256 of the code ``function``'s results depend on (see the module docstring).

    It changes when the reached definitions of the function's own module or any module
    of :func:`dependencies` change as code, and not for comments, docstrings, formatting,
    presentation modules or unrelated definitions.
    """
    package_dir = package_dir or _PACKAGE_DIR
    module, name = _root(function)
    own, modules = _analyse(module, name, package_dir)
    digest = hashlib.sha256(f"{module}.{name}\0{own}\0".encode())
    for dependency in modules:
        digest.update(f"{dependency}\0{module_hash(dependency, package_dir)}\0".encode())
    return digest.hexdigest()
