"""The package's shape, read from its syntax trees (nothing is imported or run): short parameter lists, short
modules, and imports that point down the layers (docs/architecture.md). Each checker is also run on small
synthetic sources, so a checker that stopped seeing a violation fails here too instead of passing on everything."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO, package_modules

#: At most this many parameters per function or method (self/cls not counted; *args and **kwargs one each).
MAX_PARAMETERS = 8
#: At most this many lines per module.
MAX_LINES = 500

#: The layers, lowest first. A module may import from its own layer and the layers below it, never from one above:
#: plumbing (files, errors, progress) -> method (the networks, losses, recipe) -> data (images in) -> engines (the
#: training and inference loops) -> metrics (measuring the results) -> commands (one per subcommand) -> cli.
LAYERS = ("plumbing", "method", "data", "engines", "metrics", "commands", "cli")
#: Modules outside the layer packages and the layer they belong to. The package's root holds only its version: it
#: sits below every layer and imports nothing of the package.
OTHER_MODULES = {"dsgan_cli": "root", "dsgan_cli.cli": "cli", "dsgan_cli.cli_options": "cli", "dsgan_cli.__main__": "cli"}
ORDER = ("root", *LAYERS)

# PENDING: exceptions to the limits, each to be removed as soon as its limit holds (entries are "path::qualified
# name" for a function, a path for a module); test_pending_entries_are_still_needed fails on an entry no longer
# needed, so the list only shrinks. It is empty: every function and module is within the limits.
PENDING: set[str] = set()

#: The command functions of the CLI (decorated ``@app.command(...)`` in this module) take one parameter per option.
CLI = "dsgan_cli/cli.py"


# --------------------------------------------------------------------------- the checkers


def count_parameters(args: ast.arguments, method: bool) -> int:
    """Parameters of a signature; a method's first (self or cls) is not counted."""
    n = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)
    first = (args.posonlyargs + args.args)[:1]
    return n - 1 if method and first and first[0].arg in ("self", "cls") else n


def _is_typer_command(node: ast.AST) -> bool:
    """Whether a function is decorated ``@app.command(...)``."""
    return any(
        isinstance(d, ast.Call)
        and isinstance(d.func, ast.Attribute)
        and d.func.attr == "command"
        and isinstance(d.func.value, ast.Name)
        and d.func.value.id == "app"
        for d in getattr(node, "decorator_list", ())
    )


def long_signatures(source: str, exempt_typer_commands: bool = False) -> list[tuple[str, int, int]]:
    """(qualified name, line, parameter count) of every function, method and lambda in ``source`` with more than
    MAX_PARAMETERS parameters; nested functions are named ``outer.inner``."""
    found = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                name = prefix + (child.name if not isinstance(child, ast.Lambda) else "<lambda>")
                n = count_parameters(child.args, in_class and not isinstance(child, ast.Lambda))
                if n > MAX_PARAMETERS and not (exempt_typer_commands and _is_typer_command(child)):
                    found.append((name, child.lineno, n))
                visit(child, f"{name}.", False)
            else:
                visit(child, prefix, in_class)

    visit(ast.parse(source), "", False)
    return found


def _root_names() -> set[str]:
    """The names the package's ``__init__`` defines (``__version__``)."""
    tree = ast.parse((REPO / "dsgan_cli" / "__init__.py").read_text(encoding="utf-8"))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def layer_of(module: str) -> str | None:
    """The layer of a dotted name in the package (a module, or a name imported from one): "root" for the package
    itself and the names its ``__init__`` defines; None for anything that belongs to no layer."""
    if module in OTHER_MODULES:
        return OTHER_MODULES[module]
    parts = module.split(".")
    if parts[1] in ("cli", "cli_options", "__main__"):
        return "cli"
    if parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in _root_names():
        return "root"
    return None


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import of the package in ``source`` (the module ``module``), at the top level and
    inside functions, relative ones resolved; ``from X import a`` gives ``X.a`` (a module or a name in X)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found += [(node.lineno, f"{origin}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "dsgan_cli" or name.startswith("dsgan_cli.")]


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the module ``module``) of a higher layer than the module's own, or of a module
    that belongs to no layer, as "line: target (layer)"."""
    own = layer_of(module)
    found = []
    for line, target in imports_of(source, module, is_package):
        layer = layer_of(target)
        if own is None or layer is None or ORDER.index(layer) > ORDER.index(own):
            found.append(f"{line}: {target} ({layer or 'no layer'}, above {own or 'no layer'})")
    return found


def _rel(path) -> str:
    return path.relative_to(REPO).as_posix()


# --------------------------------------------------------------------------- the package


def test_no_function_has_more_than_eight_parameters():
    offenders = []
    for path in package_modules().values():
        rel = _rel(path)
        for name, line, n in long_signatures(path.read_text(encoding="utf-8"), exempt_typer_commands=rel == CLI):
            if f"{rel}::{name}" not in PENDING:
                offenders.append(f"{rel}:{line}: {name} has {n} parameters")
    assert not offenders, (
        f"more than {MAX_PARAMETERS} parameters (gather options in a frozen dataclass, as RunOptions does):\n" + "\n".join(offenders)
    )


def test_no_module_is_longer_than_five_hundred_lines():
    offenders = []
    for path in package_modules().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and _rel(path) not in PENDING:
            offenders.append(f"{_rel(path)}: {n} lines")
    assert not offenders, f"modules over {MAX_LINES} lines (split them by concern):\n" + "\n".join(offenders)


def test_imports_point_down_the_layers():
    offenders = []
    for module, path in package_modules().items():
        for found in upward_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            offenders.append(f"{_rel(path)}:{found}")
    assert not offenders, (
        "imports of a higher layer (the order is root, " + ", ".join(LAYERS) + "; see docs/architecture.md):\n" + "\n".join(offenders)
    )


def test_every_module_has_a_layer():
    assert not [m for m in package_modules() if layer_of(m) is None]


def test_pending_entries_are_still_needed():
    """An entry whose limit now holds must go, so that PENDING only shrinks."""
    modules = {_rel(p): p for p in package_modules().values()}
    still = set()
    for rel, path in modules.items():
        source = path.read_text(encoding="utf-8")
        still |= {f"{rel}::{name}" for name, _, _ in long_signatures(source, exempt_typer_commands=rel == CLI)}
        if len(source.splitlines()) > MAX_LINES:
            still.add(rel)
    assert not PENDING - still, f"PENDING entries that now hold their limit; remove them: {sorted(PENDING - still)}"


# --------------------------------------------------------------------------- the checkers on synthetic sources


def _signature(n: int) -> str:
    return ", ".join(f"a{i}" for i in range(n))


def test_the_parameter_check_counts_every_kind_of_parameter():
    assert long_signatures(f"def f({_signature(8)}): pass") == []
    assert long_signatures(f"def f({_signature(9)}): pass") == [("f", 1, 9)]
    assert long_signatures("def f(a, /, b, *args, c, d=1, e, f, g, **kw): pass") == [("f", 1, 9)]
    assert long_signatures("async def f(a, b, c, d, e, f, g, h, i): pass") == [("f", 1, 9)]
    assert long_signatures("g = lambda a, b, c, d, e, f, g, h, i: 0") == [("<lambda>", 1, 9)]


def test_the_parameter_check_leaves_out_only_a_methods_self_or_cls():
    methods = f"class C:\n    def m(self, {_signature(8)}): pass\n    @classmethod\n    def k(cls, {_signature(8)}): pass\n"
    assert long_signatures(methods) == []
    assert long_signatures(f"class C:\n    def m(self, {_signature(9)}): pass\n") == [("C.m", 2, 9)]
    # A plain function's first parameter counts, whatever its name; so does self in a function nested in a method.
    assert long_signatures(f"def f(self, {_signature(8)}): pass") == [("f", 1, 9)]
    nested = f"class C:\n    def m(self):\n        def inner(self, {_signature(8)}): pass\n"
    assert long_signatures(nested) == [("C.m.inner", 3, 9)]


def test_the_parameter_check_exempts_only_typer_commands_and_only_when_asked():
    command = f"@app.command('x')\ndef cmd({_signature(12)}): pass\n"
    assert long_signatures(command, exempt_typer_commands=True) == []
    assert long_signatures(command) == [("cmd", 2, 12)]
    other = f"@app.callback()\ndef cb({_signature(9)}): pass\n@other.command()\ndef c2({_signature(9)}): pass\n"
    assert [name for name, _, _ in long_signatures(other, exempt_typer_commands=True)] == ["cb", "c2"]


def test_the_layer_map_places_every_kind_of_name():
    assert layer_of("dsgan_cli.plumbing.writes") == "plumbing"
    assert layer_of("dsgan_cli.engines.inference.run_jobs") == "engines"
    assert layer_of("dsgan_cli.cli") == layer_of("dsgan_cli.__main__") == "cli"
    assert layer_of("dsgan_cli") == layer_of("dsgan_cli.__version__") == "root"
    assert layer_of("dsgan_cli.recipes") is None  # the recipes' data package is no layer: nothing imports it
    assert layer_of("dsgan_cli.tools") is layer_of("dsgan_cli.tools.x") is None  # a new module must be given a layer


@pytest.mark.parametrize(
    "module, code",
    [
        ("dsgan_cli.plumbing.jsonl", "from ..data.images import open_regular"),
        ("dsgan_cli.plumbing.jsonl", "from dsgan_cli.data import images"),
        ("dsgan_cli.plumbing.jsonl", "import dsgan_cli.data.images"),
        ("dsgan_cli.method.weights", "def f():\n    from ..engines.checkpoint import load_weights_file\n"),
        ("dsgan_cli.method.weights", "class C:\n    def m(self):\n        import dsgan_cli.engines.checkpoint as c\n"),
        ("dsgan_cli.engines.inference", "from ..commands import degrade"),
        ("dsgan_cli.engines.inference", "from .. import cli"),
        ("dsgan_cli.commands.degrade", "from ..cli import main"),
        ("dsgan_cli.metrics", "from ..commands.evaluate import evaluate"),  # a package's __init__, relative to itself
        ("dsgan_cli", "from .plumbing.errors import DsganError"),
        ("dsgan_cli.engines.inference", "from ..recipes import anything"),
    ],
)
def test_the_import_check_sees_each_kind_of_upward_import(module, code):
    assert upward_imports(code, module, is_package=module in ("dsgan_cli", "dsgan_cli.metrics")), (
        f"{code!r} in {module} was not seen as an upward import"
    )


@pytest.mark.parametrize(
    "module, code",
    [
        ("dsgan_cli.data.images", "from ..plumbing.reads import open_regular"),
        ("dsgan_cli.data.datacache", "from .images import decode_square\nfrom . import sets"),
        ("dsgan_cli.engines.checkpoint", "from .. import __version__"),
        ("dsgan_cli.commands.demo", "def f():\n    from ..engines.train import train\n    from .pairs import make_pairs\n"),
        ("dsgan_cli.cli", "from .commands.degrade import degrade_folder\nfrom . import __version__"),
        ("dsgan_cli.__main__", "from .cli import main"),
        ("dsgan_cli.method.models", "import torch\nfrom torch import nn\nimport importlib"),
    ],
)
def test_the_import_check_lets_imports_of_the_same_or_a_lower_layer_pass(module, code):
    assert upward_imports(code, module) == []
