"""The model configuration: validated once, carried by every generator file, the only way G and D are built."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsgan_cli.engines.checkpoint import load_generator, read_metadata, save_generator
from dsgan_cli.method.models import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from dsgan_cli.plumbing.errors import DsganError


def test_generator_file_carries_its_config_and_builds_the_same_network(tmp_path):
    config = GeneratorConfig(
        n_res_blocks=2, channels=8, padding="reflect", output="residual", output_noise=True, noise_init=5.0, jpeg_quality=60
    )
    path = tmp_path / "g.safetensors"
    save_generator(Generator(config), path, step=3, scale=2)
    stored = json.loads(read_metadata(path)["generator_config"])
    assert stored["jpeg_quality"] == 60 and stored["noise_init"] == 5.0 and stored["padding"] == "reflect"
    loaded, meta = load_generator(path)
    assert loaded.config == config, "the file did not give back the configuration it was saved with"
    assert meta["step"] == 3


def test_the_config_in_the_file_wins_over_the_separate_keys(tmp_path):
    """The separate keys are kept for people reading the metadata; the JSON is what builds the network."""
    path = tmp_path / "g.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8, output="residual")), path, step=0, scale=2)
    meta = read_metadata(path)
    meta["output"] = "sigmoid"
    save_file(load_file(path), path, metadata=meta)
    assert load_generator(path)[0].config.output == "residual"


def test_files_without_a_config_are_read_from_their_separate_keys(tmp_path):
    path = tmp_path / "old.safetensors"
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, padding="replicate", output="residual"))
    save_generator(g, path, step=0, scale=2)
    meta = read_metadata(path)
    del meta["generator_config"]
    save_file(load_file(path), path, metadata=meta)
    assert load_generator(path)[0].config == g.config


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"n_res_blocks": 1, "channels": 8, "wings": 2}, "unknown generator option 'wings'"),
        ({"n_res_blocks": 1.5, "channels": 8}, "n_res_blocks=1.5 is not a int"),
        ({"n_res_blocks": 1, "channels": 8, "output": "tanh"}, "output must be one of"),
        ({"n_res_blocks": 1, "channels": 8, "jpeg_quality": 101}, "jpeg_quality must be"),
    ],
)
def test_a_bad_config_in_a_file_is_refused_naming_the_file_and_the_option(tmp_path, fields, reason):
    path = tmp_path / "bad.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), path, step=0, scale=2)
    meta = read_metadata(path)
    meta["generator_config"] = json.dumps(fields)
    save_file(load_file(path), path, metadata=meta)
    with pytest.raises(DsganError) as e:
        load_generator(path)
    assert str(path) in str(e.value) and reason in str(e.value)


def test_networks_are_built_from_configs_only():
    with pytest.raises(TypeError, match="GeneratorConfig"):
        Generator(8)
    with pytest.raises(TypeError, match="DiscriminatorConfig"):
        Discriminator(5)
    with pytest.raises(dataclasses.FrozenInstanceError):  # a built network's config cannot drift from its weights
        GeneratorConfig().channels = 3


def test_discriminator_config_sets_its_filter_and_norm():
    d = Discriminator(DiscriminatorConfig(filter_kernel=7, gaussian=True, norm="none"))
    assert d.filter.low.kernel_size == 7 and d.filter.low.gaussian
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    with pytest.raises(ValueError, match="filter_kernel"):
        DiscriminatorConfig(filter_kernel=4)


def test_resume_refuses_a_checkpoint_whose_generator_config_differs(tmp_path):
    from dsgan_cli.engines.rundir import check_generator_config

    ckpt = tmp_path / "step_000010"
    ckpt.mkdir()
    saved = GeneratorConfig(n_res_blocks=1, channels=8, output="residual", jpeg_quality=70)
    save_generator(Generator(saved), ckpt / "generator.safetensors", step=10, scale=2)
    check_generator_config(ckpt, saved)  # the same generator: resumes
    with pytest.raises(DsganError, match=r"jpeg_quality=70.*jpeg_quality=0"):
        check_generator_config(ckpt, GeneratorConfig(n_res_blocks=1, channels=8, output="residual"))


# ----------------------------------------------------------------------------- retired options


@pytest.mark.parametrize("key, value", [("noise_channels", "1"), ("grid_period", "8"), ("noise_filter", "5"), ("output", "blur")])
def test_a_generator_file_using_a_retired_option_is_refused_naming_it(tmp_path, key, value):
    """Files written before the config existed hold options as separate keys; one that is on cannot be built."""
    path = tmp_path / "old.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), path, step=0, scale=2)
    meta = read_metadata(path)
    del meta["generator_config"]
    meta[key] = value
    save_file(load_file(path), path, metadata=meta)
    with pytest.raises(DsganError) as e:
        load_generator(path)
    assert str(path) in str(e.value) and f"{key}=" in str(e.value) and "retired option" in str(e.value)


def test_retired_options_at_their_off_value_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), path, step=0, scale=2)
    meta = read_metadata(path)
    del meta["generator_config"]
    meta.update(noise_channels="0", grid_period="0", noise_filter="1", blur_size="5", output="sigmoid")
    save_file(load_file(path), path, metadata=meta)
    assert load_generator(path)[0].config == GeneratorConfig(n_res_blocks=1, channels=8)
    assert GeneratorConfig.from_dict({"n_res_blocks": 1, "channels": 8, "grid_period": 0}) == GeneratorConfig(1, 8)
    with pytest.raises(ValueError, match="grid_period=8, a retired option"):
        GeneratorConfig.from_dict({"n_res_blocks": 1, "channels": 8, "grid_period": 8})


@pytest.mark.parametrize(
    "key", ["model.grid_period=8", "model.noise_channels=1", "model.d_contrast_free=true", "loss.noise_level_scales=2"]
)
def test_a_recipe_using_a_retired_option_is_refused_naming_it(key):
    from dsgan_cli.method.recipe import load_recipe

    with pytest.raises(DsganError, match=f"{key.split('=')[0]} is a retired option"):
        load_recipe("idphoto", [key])
