"""torch/torchvision are ranges in pyproject.toml (users bring their own builds); constraints.txt pins what make/CI install."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def project_requirements() -> dict[str, Requirement]:
    """pyproject.toml's dependencies by name."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def constraints() -> dict[str, Version]:
    """constraints.txt's exact pins by name."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[req.name] = Version(spec.version)
    return pins


def test_torch_and_torchvision_are_ranges_pinned_by_the_constraints_file():
    reqs, pins = project_requirements(), constraints()
    for name in ("torch", "torchvision"):
        ops = {s.operator for s in reqs[name].specifier}
        assert ops and not ops & {"==", "==="}, f"pyproject.toml pins {name} exactly ({reqs[name]}); it must be a range"
        assert name in pins, f"constraints.txt does not pin {name}"
        assert reqs[name].specifier.contains(pins[name]), f"constraints.txt's {name} {pins[name]} is outside {reqs[name]}"


def test_installed_torch_is_the_constrained_build():
    pins = constraints()
    for name in ("torch", "torchvision"):
        installed = Version(version(name)).base_version  # drop a local tag such as +cpu
        assert Version(installed) == pins[name], f"{name} {installed} installed, constraints.txt pins {pins[name]}"
