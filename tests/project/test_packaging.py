"""Built-in recipes are package data: names resolve, the wheel holds them, a plain install runs the demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, TINY_RECIPE, package_modules, run_cli

from dsgan_cli.method.recipe import load_recipe, resolve_recipe
from dsgan_cli.plumbing.errors import EXIT_USAGE, DsganError

#: The one copy of the built-in recipes: the top-level recipes/ folder, installed as the package dsgan_cli.recipes.
PACKAGE_RECIPES = REPO / "recipes"
BUILTIN = ("idphoto", "paper")


# ----------------------------------------------------------------------------- resolving a recipe argument


def test_builtin_names_resolve_to_the_package_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names do not depend on the current folder
    assert sorted(p.stem for p in PACKAGE_RECIPES.glob("*.toml")) == list(BUILTIN)
    for name in BUILTIN:
        assert resolve_recipe(name) == PACKAGE_RECIPES / f"{name}.toml"
        assert load_recipe(name).train.output_dir == f"runs/{name}"
    # A folder of that name (e.g. runs/ or data/ layouts) does not hide a built-in recipe.
    (tmp_path / "paper").mkdir()
    assert resolve_recipe("paper") == PACKAGE_RECIPES / "paper.toml"


def test_a_path_is_read_as_a_file_and_a_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
    own = tmp_path / "own recipe.toml"
    shutil.copy(TINY_RECIPE, own)
    assert resolve_recipe(own) == own and resolve_recipe(str(own)) == own
    assert load_recipe(own).train.iterations == load_recipe(TINY_RECIPE).train.iterations
    monkeypatch.chdir(tmp_path)
    shutil.copy(TINY_RECIPE, tmp_path / "idphoto")
    assert resolve_recipe("idphoto") == Path("idphoto")
    assert load_recipe("idphoto").train.iterations != load_recipe(PACKAGE_RECIPES / "idphoto.toml").train.iterations


def test_unknown_name_lists_the_builtin_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arg in ("idphoto.toml", "recipes/nope.toml", "nope"):
        with pytest.raises(DsganError) as e:
            resolve_recipe(arg)
        assert str(e.value) == f"{arg}: recipe file not found, and not a built-in recipe (idphoto, paper)"
        assert e.value.exit_code == EXIT_USAGE


def test_the_design_cards_recipe_path_works_here_and_falls_back_elsewhere(tmp_path, monkeypatch, capsys):
    """`recipes/idphoto.toml` is the project's file in its root; elsewhere the built-in one, with a note."""
    monkeypatch.chdir(REPO)
    assert resolve_recipe("recipes/idphoto.toml") == Path("recipes/idphoto.toml")
    assert capsys.readouterr().err == ""
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("recipes/paper.toml") == PACKAGE_RECIPES / "paper.toml"
    note = capsys.readouterr().err
    assert note.startswith("note: recipes/paper.toml is not in this folder; using the built-in recipe paper") and note.count("\n") == 1
    # A file of the user's own at that path wins.
    (tmp_path / "recipes").mkdir()
    shutil.copy(TINY_RECIPE, tmp_path / "recipes" / "paper.toml")
    assert resolve_recipe("recipes/paper.toml") == Path("recipes/paper.toml")


@pytest.mark.slow
def test_cli_train_takes_a_builtin_name_and_refuses_an_unknown_one(tmp_path):
    proc = run_cli("train", "nope", "--no-progress", cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().splitlines() == ["error: nope: recipe file not found, and not a built-in recipe (idphoto, paper)"]
    # The built-in recipe is read: training then stops at its (missing) data folder, named from the recipe.
    proc = run_cli("train", "idphoto", "--no-progress", cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().splitlines() == [
        "error: data/idphoto/hr: no such folder (data.hr_dir); make it with "
        "`dsgan prepare RAW_CLEAN_PHOTOS --out data/idphoto/hr --size 256`, or set data.hr_dir"
    ]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build leaves nothing in the repository)."""
    src = tmp_path_factory.mktemp("src")
    for folder in ("dsgan_cli", "recipes"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("dsgan_cli-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_contains_the_builtin_recipes(wheel):
    with zipfile.ZipFile(wheel) as zf:
        recipes = {n for n in zf.namelist() if n.startswith("dsgan_cli/recipes/") and n.endswith(".toml")}
        assert recipes == {f"dsgan_cli/recipes/{name}.toml" for name in BUILTIN}
        for name in BUILTIN:  # the same bytes as the one copy in recipes/: nothing copied by hand
            assert zf.read(f"dsgan_cli/recipes/{name}.toml") == (REPO / "recipes" / f"{name}.toml").read_bytes()
        assert "dsgan_cli/commands/demo.py" in zf.namelist() and "dsgan_cli/cli.py" in zf.namelist()
        # Every module of the source tree, subpackages included (pyproject.toml lists the packages one by one).
        missing = {p.relative_to(REPO).as_posix() for p in package_modules().values()} - set(zf.namelist())
        assert not missing, f"modules left out of the wheel: {sorted(missing)}"


def test_pyproject_ships_every_folder_of_the_package():
    """A subpackage missing from [tool.setuptools] packages works in the repository and is absent from the wheel."""
    import tomllib

    shipped = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dsgan_cli").rglob("*.py")}
    assert "dsgan_cli.engines" in folders and shipped == folders | {"dsgan_cli.recipes"}


@pytest.mark.slow
def test_non_editable_install_runs_the_quick_demo(wheel, tmp_path):
    """``pip install`` of the wheel (not editable), run from outside the repository: ``dsgan demo --quick``."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", DSGAN_OFFLINE="1")
    env.pop("DSGAN_INCEPTION_WEIGHTS", None)
    where = subprocess.run(
        [sys.executable, "-c", "import dsgan_cli; print(dsgan_cli.__file__)"], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert Path(where.stdout.strip()) == site / "dsgan_cli" / "__init__.py", where.stdout + where.stderr

    out = work / "demo"
    proc = subprocess.run(
        [str(site / "bin" / "dsgan"), "demo", "--quick", "--no-progress", "--out", str(out)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    # The installed package ran and read its own recipe (not the repository's).
    assert Path(summary["recipe_file"]) == site / "dsgan_cli" / "recipes" / "idphoto.toml"
    assert summary["ok"] is True and Path(summary["train"]["generator"]).is_file()
    # Outside the repository, the design card's recipe path falls back to the installed built-in one.
    proc = subprocess.run(
        [str(site / "bin" / "dsgan"), "train", "recipes/nope.toml"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "not a built-in recipe" in proc.stderr
    code = "from dsgan_cli.method.recipe import resolve_recipe; print(resolve_recipe('recipes/idphoto.toml'))"
    check = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert Path(check.stdout.strip()) == site / "dsgan_cli" / "recipes" / "idphoto.toml", check.stdout + check.stderr
    assert "using the built-in recipe idphoto" in check.stderr
