import pytest
from conftest import REPO, run_cli

from dsgan_cli.method.recipe import load_recipe, parse_override, recipe_help
from dsgan_cli.plumbing.errors import DsganError


def test_paper_recipe_has_the_reference_settings():
    r = load_recipe(REPO / "recipes" / "paper.toml")
    assert (r.data.hr_size, r.data.lr_size, r.data.scale, r.data.crop_size) == (256, 128, 2, 0)
    assert r.optim.lr == 2e-4 and (r.optim.beta1, r.optim.beta2) == (0.5, 0.999)
    assert r.train.iterations == 80_000
    assert (r.loss.w_color, r.loss.w_gan, r.loss.w_perceptual) == (1.0, 0.005, 0.01)


def test_paper_schedule_is_the_originals_constant_then_linear_to_zero():
    from dsgan_cli.engines.train import lr_at

    r = load_recipe(REPO / "recipes" / "paper.toml")
    assert (r.optim.lr_decay, r.optim.decay_start) == ("linear", 40_000)
    lrs = [lr_at(s, r) for s in range(0, 80_001, 500)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, r) == lr_at(39_999, r) == lr_at(40_000, r) == 2e-4  # first half constant
    assert lr_at(60_000, r) == pytest.approx(1e-4)  # halfway down
    assert lr_at(79_999, r) == pytest.approx(2e-4 / 40_000)  # last step: one decay step above 0
    assert lr_at(80_000, r) == 0.0


def test_overrides_are_typed(tiny_recipe):
    r = load_recipe(tiny_recipe, ["train.iterations=7", "optim.lr=1e-3", "data.hr_dir=/x y/z", "data.flip=true"])
    assert r.train.iterations == 7 and r.optim.lr == 1e-3 and r.data.hr_dir == "/x y/z" and r.data.flip is True


@pytest.mark.parametrize(
    "body, needle",
    [
        ("[train]\niterations = 'many'\n", "train.iterations"),
        ("[train]\nitterations = 5\n", "train.itterations"),
        ("[trian]\niterations = 5\n", "trian"),
        ("[optim]\nlr = -0.1\n", "optim.lr"),
        ("[optim]\nlr = 0\n", "optim.lr"),
        ("[train]\nprecision = 'fp8'\n", "train.precision"),
        ("[data]\nflip = 1\n", "data.flip"),
        ("[data]\nhr_size = 100\n", "data.hr_size"),
        ("[perceptual]\nlayers = ['relu9_9']\n", "perceptual.layers"),
        ("[train\n", "TOML syntax"),
    ],
)
def test_bad_recipes_name_the_key_and_file(tmp_path, body, needle):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(DsganError) as e:
        load_recipe(path)
    assert needle in str(e.value) and "bad.toml" in str(e.value)
    assert e.value.exit_code == 2


def test_bad_override_is_rejected(tiny_recipe):
    with pytest.raises(DsganError, match="train.bogus"):
        load_recipe(tiny_recipe, ["train.bogus=1"])
    with pytest.raises(DsganError, match="section.key"):
        parse_override("iterations=1")


def test_every_key_is_documented():
    rows = recipe_help()
    assert len(rows) > 30 and all(help_ for _, _, help_ in rows)


@pytest.mark.slow
def test_cli_reports_bad_recipe_in_one_line_exit_2(tmp_path):
    path = tmp_path / "neg.toml"
    path.write_text("[optim]\nlr = -1e-4\n")
    res = run_cli("train", path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "optim.lr" in lines[0] and "neg.toml" in lines[0]
    assert "Traceback" not in res.stderr


def test_cli_help_and_version():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("prepare", "train", "degrade", "eval"):
        assert cmd in res.stdout
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("dsgan-cli ")


def test_docs_document_every_recipe_key_and_the_readme_both_commands():
    recipes_doc = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    missing = [key for key, _, _ in recipe_help() if f"`{key}`" not in recipes_doc]
    assert not missing, f"docs/recipes.md lacks recipe keys: {missing}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make venv" in readme and "docs/recipes.md" in readme
