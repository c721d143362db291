"""`dsgan train`: end-to-end CLI run, exact resume, atomic checkpoints, non-finite stop, data errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_images
from PIL import Image
from safetensors.torch import load_file

from dsgan_cli.engines.checkpoint import load_generator
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import EXIT_NONFINITE, DsganError

# Smaller than tests/tiny.toml: 16 px HR, 8 px LR, batch 2, so a step costs well under a second.
SMALL = ["data.hr_size=16", "data.lr_size=8", "train.batch_size=2", "data.num_workers=0"]
# The perceptual path is covered by the CLI and resume tests; building VGG19 costs seconds per run.
NO_VGG = "loss.w_perceptual=0"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """HR (16 px, clean) and real-LR (8 px, noisy) folders, plus one unreadable HR file."""
    root = tmp_path_factory.mktemp("data")
    write_images(root / "hr", 6, 16, seed=0)
    write_images(root / "lr", 5, 8, seed=1, noise=12)
    return root


def small_recipe(tiny_recipe: Path, data: Path, out: Path, *extra: str):
    """The tiny recipe at 16/8 px pointing at ``data`` and writing to ``out``."""
    sets = [
        *SMALL,
        f"data.hr_dir={json.dumps(str(data / 'hr'))}",
        f"data.lr_dir={json.dumps(str(data / 'lr'))}",
        f"train.output_dir={json.dumps(str(out))}",
        *extra,
    ]
    return load_recipe(tiny_recipe, sets)


def cli_sets(data: Path, out: Path, *extra: str) -> list[str]:
    """The same overrides as ``--set`` arguments."""
    args = []
    for s in [*SMALL, f"data.hr_dir={data / 'hr'}", f"data.lr_dir={data / 'lr'}", f"train.output_dir={out}", *extra]:
        args += ["--set", s]
    return args


@pytest.mark.slow
def test_cli_train_writes_everything_and_resumes(tmp_path, tiny_recipe):
    data = tmp_path / "data"
    write_images(data / "hr", 6, 16, seed=0)
    write_images(data / "lr", 5, 8, seed=1, noise=12)
    (data / "hr" / "broken.png").write_text("not an image")
    out = tmp_path / "run"

    res = run_cli("train", tiny_recipe, *cli_sets(data, out, "train.iterations=3", "train.checkpoint_every=1"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "broken.png" in res.stderr and "skipping unreadable" in res.stderr
    for what in ("generator.safetensors", "checkpoints", "samples", "metrics.jsonl"):
        assert what in res.stdout

    # keep_last = 2 of the checkpoints at steps 1, 2, 3; no temp folders left
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000003"]
    last = out / "checkpoints" / "step_00000003"
    for name in (
        "model.safetensors",
        "model_1.safetensors",
        "optimizer.bin",
        "optimizer_1.bin",
        "generator.safetensors",
        "trainer_state.json",
    ):
        assert (last / name).is_file(), name
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["data"]["counts"]["hr"] == 6 and state["data"]["counts"]["hr_skipped"] == 1

    G, meta = load_generator(out / "generator.safetensors")
    assert meta["step"] == 3 and meta["scale"] == 2 and meta["recipe"]["data"]["hr_size"] == 16
    assert G.n_res_blocks == 2 and G.channels == 16
    assert torch.equal(load_file(last / "generator.safetensors")["block_output.weight"], G.block_output.weight)
    assert json.loads((out / "recipe.json").read_text())["train"]["iterations"] == 3

    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        for key in ("loss_g", "loss_d", "loss_color", "loss_gan", "loss_perceptual", "d_real", "d_fake"):
            assert math.isfinite(r[key]), (key, r)
        assert 0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1

    # grid: 4 rows (min of 4 and set sizes) x 5 columns of 8 px with 2 px gaps
    grid = Image.open(out / "samples" / "step_00000003.png")
    assert grid.size == (5 * 8 + 6 * 2, 4 * 8 + 5 * 2)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_00000002.png", "step_00000003.png"]

    # a fresh run over an existing one is refused; --resume latest continues it
    res = run_cli("train", tiny_recipe, *cli_sets(data, out, "train.iterations=3"), cwd=tmp_path)
    assert res.returncode == 2 and "--resume latest" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(
        "train", tiny_recipe, *cli_sets(data, out, "train.iterations=4", "train.checkpoint_every=1"), "--resume", "latest", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "step_00000003" in res.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003", "step_00000004"]
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert load_generator(out / "generator.safetensors")[1]["step"] == 4


@pytest.mark.parametrize(
    "variant", [(), ("optim.ema=0.5",), ("model.output_noise=true", "model.output=residual")], ids=["plain", "ema", "noise"]
)
def test_resume_equals_straight_run(tmp_path, tiny_recipe, data, variant):
    from dsgan_cli.engines.train import train

    opts = ("train.checkpoint_every=2", "train.sample_every=100", "data.flip=true", "data.crop_size=6", NO_VGG, *variant)
    straight = train(small_recipe(tiny_recipe, data, tmp_path / "a", "train.iterations=4", *opts), progress=False)
    train(small_recipe(tiny_recipe, data, tmp_path / "b", "train.iterations=2", *opts), progress=False)
    resumed = train(small_recipe(tiny_recipe, data, tmp_path / "b", "train.iterations=4", *opts), resume="latest", progress=False)
    assert straight.steps == resumed.steps == 4

    a, b = load_file(straight.generator_path), load_file(resumed.generator_path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k
    # the weights did move, so equality above is not trivial
    first = load_file(tmp_path / "b" / "checkpoints" / "step_00000002" / "generator.safetensors")
    assert any(not torch.allclose(first[k], a[k]) for k in a)
    # D (with its BatchNorm statistics) matches too
    da, db = (load_file(r.checkpoint_dir / "model_1.safetensors") for r in (straight, resumed))
    for k in da:
        assert torch.allclose(da[k].float(), db[k].float(), rtol=0, atol=1e-6), k
    if "optim.ema=0.5" in variant:
        # With an EMA the exported generator is the average, not the last G (model.safetensors in the checkpoint).
        last_g = load_file(straight.checkpoint_dir / "model.safetensors")
        assert any(not torch.allclose(last_g[k].float(), a[k]) for k in a), "generator.safetensors is not the EMA"


def test_interrupted_checkpoint_is_ignored_and_resume_continues(tmp_path, tiny_recipe, data, monkeypatch):
    import dsgan_cli.engines.rundir as rd
    import dsgan_cli.engines.train as tr

    out = tmp_path / "run"
    real_save = rd.save_generator
    calls = {"n": 0}

    def dying_save(g, path, **kw):
        # Dies while writing the second checkpoint (step 4), before it is renamed into place.
        if Path(path).parent.name.endswith(".partial"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return real_save(g, path, **kw)

    monkeypatch.setattr(rd, "save_generator", dying_save)
    with pytest.raises(KeyboardInterrupt):
        tr.train(small_recipe(tiny_recipe, data, out, "train.iterations=4", NO_VGG), progress=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".step_00000004.partial", "step_00000002"]
    # a non-hidden folder without trainer_state.json (e.g. copied half-way) is not complete either
    shutil.copytree(out / "checkpoints" / ".step_00000004.partial", out / "checkpoints" / "step_00000005")
    assert rd.resolve_resume("latest", out) == out / "checkpoints" / "step_00000002"
    with pytest.raises(DsganError, match="not a complete training checkpoint"):
        rd.resolve_resume(str(out / "checkpoints" / "step_00000005"), out)
    shutil.rmtree(out / "checkpoints" / "step_00000005")

    monkeypatch.setattr(rd, "save_generator", real_save)
    result = tr.train(small_recipe(tiny_recipe, data, out, "train.iterations=4", NO_VGG), resume="latest", progress=False)
    assert result.checkpoint_dir == out / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert load_generator(result.generator_path)[1]["step"] == 4


def test_non_finite_loss_stops_with_exit_3_and_keeps_checkpoint(tmp_path, tiny_recipe, data, monkeypatch):
    import dsgan_cli.method.losses as losses
    from dsgan_cli.engines.train import train

    real = losses.gan_loss_discriminator
    calls = {"n": 0}

    def exploding(real_logits, fake_logits):
        calls["n"] += 1
        loss = real(real_logits, fake_logits)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(losses, "gan_loss_discriminator", exploding)
    out = tmp_path / "run"
    with pytest.raises(DsganError) as info:
        train(small_recipe(tiny_recipe, data, out, "train.iterations=4", NO_VGG), progress=False)
    assert info.value.exit_code == EXIT_NONFINITE == 3
    msg = str(info.value)
    assert "non-finite loss at step 3" in msg and "step_00000002" in msg and "\n" not in msg
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]
    G, meta = load_generator(out / "checkpoints" / "step_00000002" / "generator.safetensors")
    assert meta["step"] == 2 and all(torch.isfinite(p).all() for p in G.parameters())


def test_non_finite_loss_between_checks_never_reaches_a_checkpoint(tmp_path, tiny_recipe, data, monkeypatch):
    import dsgan_cli.engines.rankcheck as rankcheck
    import dsgan_cli.engines.train as tr
    import dsgan_cli.method.losses as losses

    real = losses.gan_loss_discriminator
    calls = {"n": 0}

    def nan_once(real_logits, fake_logits):
        """NaN loss value at step 5 only, with zero gradients: the weights stay finite, so only the
        remembered flag can tell that step 5 went wrong."""
        calls["n"] += 1
        loss = real(real_logits, fake_logits)
        return loss.detach() * float("nan") + (loss - loss.detach()) * 0 if calls["n"] == 5 else loss

    monkeypatch.setattr(losses, "gan_loss_discriminator", nan_once)
    monkeypatch.setattr(rankcheck, "SYNC_SECONDS", 1e9)  # checks only at log/checkpoint steps, whatever the machine's speed
    out = tmp_path / "run"
    with pytest.raises(DsganError) as info:
        tr.train(small_recipe(tiny_recipe, data, out, "train.iterations=6", "train.log_every=100", NO_VGG), progress=False)
    assert info.value.exit_code == EXIT_NONFINITE
    assert "non-finite loss between steps 5 and 6" in str(info.value) and "step_00000004" in str(info.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]


def test_losses_are_synchronised_only_at_log_and_checkpoint_steps(tmp_path, tiny_recipe, data, monkeypatch):
    import accelerate

    import dsgan_cli.engines.rankcheck as rankcheck
    import dsgan_cli.engines.train as tr

    reduced_at = []
    real_reduce = accelerate.Accelerator.reduce

    def counting_reduce(self, tensor, *args, **kwargs):
        reduced_at.append(len(reduced_at))
        return real_reduce(self, tensor, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "reduce", counting_reduce)
    monkeypatch.setattr(rankcheck, "SYNC_SECONDS", 1e9)
    result = tr.train(
        small_recipe(tiny_recipe, data, tmp_path / "run", "train.iterations=6", "train.log_every=3", "train.checkpoint_every=3", NO_VGG),
        progress=False,
    )
    assert result.steps == 6 and len(reduced_at) == 3  # steps 1 (first), 3 and 6, not all 6 steps
    records = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3, 6] and all(math.isfinite(r["loss_g"]) for r in records)


@pytest.mark.parametrize("case", ["missing", "empty", "wrong_size", "all_unreadable", "same_folder"])
def test_bad_data_folders_give_one_line_errors(tmp_path, tiny_recipe, case):
    from dsgan_cli.engines.train import train

    data = tmp_path / "data"
    write_images(data / "lr", 2, 8, seed=1)
    if case == "empty":
        (data / "hr").mkdir()
    elif case == "wrong_size":
        write_images(data / "hr", 2, 16, seed=0)
        write_images(data / "hr" / "sub", 1, 20, seed=3)
    elif case == "all_unreadable":
        (data / "hr").mkdir()
        (data / "hr" / "a.png").write_bytes(b"")
    elif case == "same_folder":
        data = tmp_path / "same"
        write_images(data / "hr", 2, 16, seed=0)
        (data / "lr").symlink_to(data / "hr")
    expected = {
        "missing": f"{data / 'hr'}: no such folder (data.hr_dir); make it with `dsgan prepare RAW_CLEAN_PHOTOS --out "
        f"{data / 'hr'} --size 16`",
        "empty": "holds no images",
        "wrong_size": "img_000.png: HR image is 20x20, expected 16x16 (set data.resize_mismatched",
        "all_unreadable": "none of the 1 HR images could be read",
        "same_folder": "are the same folder",
    }[case]
    with pytest.raises(DsganError, match=re_escape(expected)) as info:
        train(small_recipe(tiny_recipe, data, tmp_path / "run"), progress=False)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing written for bad input


def re_escape(s: str) -> str:
    import re

    return re.escape(s)


@pytest.mark.slow
def test_cli_bad_folder_is_one_line_on_stderr(tmp_path, tiny_recipe):
    res = run_cli(
        "train",
        tiny_recipe,
        "--set",
        f"data.hr_dir={tmp_path / 'nope'}",
        "--set",
        f"data.lr_dir={tmp_path}",
        "--set",
        f"train.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {tmp_path / 'nope'}: no such folder (data.hr_dir); make it with "
        f"`dsgan prepare RAW_CLEAN_PHOTOS --out {tmp_path / 'nope'} --size 32`, or set data.hr_dir"
    )


def test_loader_workers_are_capped_by_the_usable_cpus(monkeypatch):
    import os

    from dsgan_cli.engines.train import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert loader_workers(4) == 2 and loader_workers(1) == 1 and loader_workers(0) == 0


def test_resize_mismatched_and_deterministic_sampling(tmp_path):
    from dsgan_cli.data.sampling import Crops, MicroBatches, stream_indices
    from dsgan_cli.data.sets import load_image_set

    write_images(tmp_path / "hr", 2, 16, seed=0)
    write_images(tmp_path / "hr", 1, 24, seed=5, suffix=".jpg")
    s = load_image_set(tmp_path / "hr", 16, what="HR", resize=True)
    assert s.images.shape == (3, 3, 16, 16) and s.images.dtype == torch.uint8 and s.resized == 1

    # every image once per epoch, in a different order per epoch, same order for the same seed
    idx = stream_indices(5, 0, 15, seed=3, stream=1)
    for e in range(3):
        assert sorted(idx[5 * e : 5 * e + 5].tolist()) == [0, 1, 2, 3, 4]
    assert not torch.equal(idx[:5], idx[5:10]) or not torch.equal(idx[5:10], idx[10:15])
    assert torch.equal(idx, stream_indices(5, 0, 15, seed=3, stream=1))
    assert torch.equal(idx[7:12], stream_indices(5, 7, 5, seed=3, stream=1))

    hr = torch.arange(6 * 3 * 16 * 16, dtype=torch.int64).remainder(251).to(torch.uint8).view(6, 3, 16, 16)
    lr = hr[:, :, ::2, ::2].contiguous()
    ds = MicroBatches(hr, lr, batch_size=2, seed=1, crops=Crops(scale=2, crop_size=4, flip=True))
    a, b = ds[7], ds[7]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (2, 3, 8, 8) and a[1].shape == (2, 3, 4, 4)
    # ranks see different images of the same global step
    r0 = MicroBatches(hr, lr, batch_size=2, seed=1, rank=0, world_size=2)[3][0]
    r1 = MicroBatches(hr, lr, batch_size=2, seed=1, rank=1, world_size=2)[3][0]
    assert not torch.equal(r0, r1)


def test_linear_lr_decay(tiny_recipe):
    from dsgan_cli.engines.train import lr_at

    r = load_recipe(tiny_recipe, ["train.iterations=100", 'optim.lr_decay="linear"', "optim.decay_start=50", "optim.lr=1e-3"])
    assert lr_at(0, r) == lr_at(49, r) == 1e-3
    assert lr_at(75, r) == pytest.approx(5e-4)
    assert lr_at(100, r) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("option", ["train.memory_format=contiguous", "train.memory_format=channels_last", "train.compile=true"])
def test_layout_and_compile_options_train_the_same_networks(tmp_path, tiny_recipe, data, option):
    """Memory layout and torch.compile change speed only: same weights after two steps, same checkpoint names,
    and a run with the option resumes from a checkpoint written without it."""
    from dsgan_cli.engines.train import train

    opts = ("train.checkpoint_every=1", "train.sample_every=100", "data.crop_size=6", NO_VGG)
    plain = train(small_recipe(tiny_recipe, data, tmp_path / "a", "train.iterations=2", *opts), progress=False)
    train(small_recipe(tiny_recipe, data, tmp_path / "b", "train.iterations=1", *opts), progress=False)
    other = train(small_recipe(tiny_recipe, data, tmp_path / "b", "train.iterations=2", *opts, option), resume="latest", progress=False)
    a, b = load_file(plain.generator_path), load_file(other.generator_path)
    assert a.keys() == b.keys(), f"{option} changes the generator's parameter names"
    start = load_file(tmp_path / "b" / "checkpoints" / "step_00000001" / "generator.safetensors")
    for k in a:
        moved = (a[k] - start[k]).abs().max().item()
        diff = (a[k] - b[k]).abs().max().item()
        assert diff <= 1e-5 + 1e-3 * moved, f"{option}: {k} differs by {diff:.3g} (the step moved it by {moved:.3g})"
    da, db = (load_file(r.checkpoint_dir / "model_1.safetensors") for r in (plain, other))
    assert da.keys() == db.keys(), f"{option} changes the discriminator's parameter names"


# ----------------------------------------------------------------------------- checkpoints read back


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, data) -> Path:
    """A run folder with complete checkpoints at steps 2 and 4 of 6 (copy it before damaging it)."""
    from conftest import TINY_RECIPE as tiny_recipe

    from dsgan_cli.engines.train import train

    out = tmp_path_factory.mktemp("ckpts") / "run"
    train(
        small_recipe(tiny_recipe, data, out, "train.iterations=4", "train.checkpoint_every=2", "train.keep_last=2", NO_VGG), progress=False
    )
    return out


def damaged_copy(src: Path, dest: Path, damage) -> Path:
    """``src`` copied to ``dest`` with ``damage(step_4_folder)`` applied."""
    shutil.copytree(src, dest)
    damage(dest / "checkpoints" / "step_00000004")
    return dest


@pytest.mark.parametrize(
    "damage, file, reason",
    [
        (lambda c: (c / "random_states_0.pkl").unlink(), "random_states_0.pkl", "missing from the checkpoint"),
        (
            lambda c: (c / "random_states_0.pkl").write_bytes((c / "random_states_0.pkl").read_bytes()[:100]),
            "random_states_0.pkl",
            "truncated or changed",
        ),
        (
            lambda c: (c / "optimizer.bin").write_bytes(b"\0" * (c / "optimizer.bin").stat().st_size),
            "optimizer.bin",
            "truncated or changed",
        ),
    ],
    ids=["rng-deleted", "rng-truncated", "optimizer-zeroed"],
)
@pytest.mark.slow
def test_resume_refuses_a_damaged_checkpoint_naming_the_file(tmp_path, tiny_recipe, data, two_checkpoints, damage, file, reason):
    """Accelerate would skip an unreadable RNG state with a log line and go on with another random stream."""
    out = damaged_copy(two_checkpoints, tmp_path / "run", damage)
    res = run_cli(
        "train",
        tiny_recipe,
        *cli_sets(data, out, "train.iterations=6", "train.checkpoint_every=2", "train.keep_last=2", NO_VGG),
        "--resume",
        "latest",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"error: {out / 'checkpoints' / 'step_00000004' / file}: {reason}"), res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"], (
        "a refused resume must leave the checkpoints as they were"
    )


@pytest.mark.parametrize(
    "state, reason",
    [
        ({"step": "4"}, "step '4' is not a whole number"),
        ({"step": 2}, "step 2 does not match its folder step_00000004"),
        ([4], "not a JSON object"),
        ({"step": 4, "world_size": 0}, "world_size 0 is not a whole number >= 1"),
        ({"step": 4, "files": {"../x": {"size": 1, "sha256": "0"}}}, "files is not a list"),
    ],
)
def test_resume_refuses_a_malformed_trainer_state_and_moves_nothing(tmp_path, tiny_recipe, data, two_checkpoints, state, reason):
    from dsgan_cli.engines.train import train

    out = damaged_copy(two_checkpoints, tmp_path / "run", lambda c: (c / "trainer_state.json").write_text(json.dumps(state)))
    with pytest.raises(DsganError, match=re_escape(f"trainer_state.json: not a valid training state: {reason}")):
        train(
            small_recipe(tiny_recipe, data, out, "train.iterations=6", "train.checkpoint_every=2", NO_VGG), resume="latest", progress=False
        )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert not (out / "abandoned").exists(), "a bad state must not set the checkpoint it names aside"


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_partial(tmp_path, tiny_recipe, data, monkeypatch):
    """Disk full shows up as torch's zip writer error; the partial folder must not stay and keep the disk full."""
    from accelerate import Accelerator

    import dsgan_cli.engines.train as tr

    def full_disk(self, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    out = tmp_path / "run"
    with pytest.raises(DsganError) as err:
        tr.train(small_recipe(tiny_recipe, data, out, "train.iterations=2", "train.checkpoint_every=2", NO_VGG), progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{out / 'checkpoints'}: cannot write the checkpoint (") and "MiB free there" in msg, msg
    assert "\n" not in msg
    assert list((out / "checkpoints").iterdir()) == [], "the partial checkpoint folder stayed"


@pytest.mark.slow
def test_progress_reaches_a_log_where_no_bar_can_draw(tmp_path, tiny_recipe, data):
    """stderr is a pipe (as under accelerate launch, nohup or a scheduler): the run's first line, estimates
    after the first step and after a few more, and plain progress lines with step/total, rate and losses."""
    out = tmp_path / "run"
    res = run_cli("train", tiny_recipe, *cli_sets(data, out, "train.iterations=6", NO_VGG), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    first = next(ln for ln in lines if ln.startswith("training steps"))
    assert first.startswith("training steps 1-6 on cpu, precision no, batch 2 x 1"), first
    assert any("s/step: about" in ln and "to step 6" in ln for ln in lines), res.stderr
    # Rate and ETA from the first step on: the estimate and a progress line come right after step 1.
    at_first = lines.index(next(ln for ln in lines if "s/step (first step, with warm-up): about" in ln))
    assert lines[at_first - 1].startswith("train: 1/6 (17%), ") and "ETA" in lines[at_first - 1], res.stderr
    final = [ln for ln in lines if ln.startswith("train: 6/6 (100%)")]
    assert final and " it/s" in final[0] and "G " in final[0] and " D " in final[0], res.stderr
    assert "\x1b[" not in res.stderr, "bar frames or colour codes reached a log"


def test_line_progress_prints_at_most_every_interval_and_at_the_end():
    import io

    from dsgan_cli.plumbing.progress import LineProgress

    now = [0.0]
    buf = io.StringIO()
    with LineProgress("it", ("losses",), every_s=10, stream=buf, clock=lambda: now[0]) as p:
        task = p.add_task("train", total=100, completed=20, losses="")
        for step in range(21, 101):
            now[0] += 1.0  # one step per second
            p.update(task, completed=step, losses=f"G {step}")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 9, lines  # after the first step, then at 11, 21, ..., 71 s and the end
    assert lines[0] == "train: 21/100 (21%), 1.00 it/s, 1s elapsed, ETA 1m19s, G 21"
    assert lines[1] == "train: 31/100 (31%), 1.00 it/s, 11s elapsed, ETA 1m09s, G 31"
    assert lines[-1].startswith("train: 100/100 (100%), 1.00 it/s, 1m20s elapsed") and "ETA" not in lines[-1]


def test_auto_precision_is_bf16_only_where_the_hardware_has_fast_bf16(monkeypatch):
    import dsgan_cli.engines.device as tr

    monkeypatch.setattr(tr, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert tr.auto_precision(False) == ("bf16", "this CPU has avx512_bf16")
    monkeypatch.setattr(tr, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert tr.auto_precision(False)[0] == "bf16"
    monkeypatch.setattr(tr, "cpu_flags", lambda: {"avx2", "avx512f"})
    precision, why = tr.auto_precision(False)
    assert precision == "no" and "neither AVX-512 BF16 nor AMX" in why
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    r = load_recipe("idphoto", ['train.precision="auto"'])
    assert tr.mixed_precision_for(r) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert tr.mixed_precision_for(r) == "fp16", "accelerate launch --mixed_precision wins over the recipe"
