"""pyproject.toml holds ranges (users bring their own builds, e.g. a CUDA torch); constraints.txt pins every
package make and CI install; the two must agree, and the code must declare what it imports."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path

from conftest import REPO, package_modules
from packaging.requirements import Requirement
from packaging.version import Version


def canonical(name: str) -> str:
    """A distribution name as pip compares them (case, ``-``/``_``/``.`` folded)."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: tuple[str, ...] = ()) -> dict[str, Requirement]:
    """pyproject.toml's dependencies (and those of ``extras``) by canonical name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = list(project["dependencies"])
    for extra in extras:
        deps += project["optional-dependencies"][extra]
    return {canonical(r.name): r for r in map(Requirement, deps)}


def constraints() -> dict[str, Version]:
    """constraints.txt's exact pins by name."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[canonical(req.name)] = Version(spec.version)
    return pins


def test_torch_and_torchvision_are_ranges_pinned_by_the_constraints_file():
    reqs, pins = project_requirements(), constraints()
    for name in ("torch", "torchvision"):
        ops = {s.operator for s in reqs[name].specifier}
        assert ops and not ops & {"==", "==="}, f"pyproject.toml pins {name} exactly ({reqs[name]}); it must be a range"
        assert name in pins, f"constraints.txt does not pin {name}"
        assert reqs[name].specifier.contains(pins[name]), f"constraints.txt's {name} {pins[name]} is outside {reqs[name]}"


def test_every_dependency_make_installs_is_pinned_within_its_range():
    """The lock covers pyproject.toml (with the extras make installs), and each pin lies in its range."""
    pins = constraints()
    for name, req in project_requirements(("test", "demo", "bench")).items():
        assert name in pins, f"constraints.txt does not pin {req.name} (run make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt's {name} {pins[name]} is outside {req}"


def test_installed_torch_is_in_the_declared_range_whatever_its_build():
    """A CUDA build (``2.x.y+cu124``) in range is as good as the pinned CPU build."""
    reqs = project_requirements()
    for name in ("torch", "torchvision"):
        installed = Version(Version(version(name)).base_version)  # drop a local tag such as +cpu or +cu124
        assert reqs[name].specifier.contains(installed), f"{name} {installed} is outside {reqs[name]}"


def test_every_third_party_import_of_the_package_is_declared():
    """An undeclared import works here only because something else pulled it in."""
    import sys

    import_names = {
        "PIL": "pillow",
        "face_recognition_models": "face-recognition-models",
        "dlib": "dlib-bin",
        "torch_fidelity": "torch-fidelity",
        "skimage": "scikit-image",
        "yaml": "pyyaml",
        "cv2": "opencv-python-headless",
    }
    declared = set(project_requirements())
    optional = set(project_requirements(("demo", "bench"))) - declared
    missing = {}
    for path in package_modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "dsgan_cli":
                    continue
                dist = canonical(import_names.get(top, top))
                if dist not in declared and dist not in optional and dist != "tensorboard":
                    missing.setdefault(dist, f"{path.relative_to(REPO)}:{node.lineno}")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def imported_modules(name: str, path: Path, node: ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The package's modules (dotted names) that ``from ... import ...`` in module ``name`` imports."""
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    found = {target} if target in modules else set()
    return found | {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}


def test_no_module_imports_another_ones_private_name_and_no_import_circle():
    """One owner per concern: modules use each other's public names, and the imports (lazy ones too) form no circle."""
    modules = package_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("dsgan_cli"))):
                continue
            targets = imported_modules(name, path, node, modules)
            assert targets, f"{name}: {ast.unparse(node)} names no module of the package"
            graph[name] |= targets
            if node.module:
                private += [
                    f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not private, private
    assert sum(map(len, graph.values())) > len(modules), "the import graph is nearly empty: the scan saw no imports"

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n in graph and n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not circles, f"modules on an import circle: {circles}"


def test_the_training_loop_reads_in_100_lines_and_no_other_function_exceeds_80():
    long = []
    modules = package_modules()
    assert "dsgan_cli.engines.train" in modules
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                limit = 100 if (name, node.name) == ("dsgan_cli.engines.train", "train") else 80
                if lines > limit:
                    long.append(f"{path.relative_to(REPO)}:{node.name} has {lines} lines (at most {limit})")
    assert not long, long
