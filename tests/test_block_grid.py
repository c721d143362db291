"""model.grid_period: G and D told where a block codec's grid lies, crops that keep it, tiles that see the whole image's."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_RECIPE, run_cli, write_images
from dsgan_cli.data.sampling import MicroBatches
from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.engines.generate import generate_tiled
from dsgan_cli.method.models import Discriminator, Generator, grid_phase


def _grid_generator(period: int = 8) -> Generator:
    torch.manual_seed(3)
    g = Generator(n_res_blocks=2, channels=8, padding="reflect", output="residual", output_noise=True,
                  grid_period=period).eval()
    with torch.no_grad():  # the residual head starts at 0: give it weights so the grid channels reach the output
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return g


def test_grid_phase_is_one_hot_rows_and_columns_from_the_origin():
    x = torch.zeros(2, 3, 5, 7)
    grid = grid_phase(x, 4, origin=(2, 3))
    assert grid.shape == (2, 8, 5, 7)
    assert torch.equal(grid.sum(1), torch.full((2, 5, 7), 2.0)), "each pixel must have exactly one row and one column phase"
    rows, cols = grid[0, :4].argmax(0), grid[0, 4:].argmax(0)
    assert torch.equal(rows[:, 0], (torch.arange(5) + 2) % 4) and torch.equal(cols[0], (torch.arange(7) + 3) % 4)
    assert torch.equal(rows, rows[:, :1].expand(5, 7)) and torch.equal(cols, cols[:1].expand(5, 7))


def test_grid_generator_depends_on_the_phase_and_tiles_see_the_whole_images_grid():
    g = _grid_generator()
    x = torch.rand(1, 3, 29, 37)
    z = g.make_noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = g(x, z)
        shifted = g(x, z, origin=(3, 0))
        period_shift = g(x, z, origin=(8, 16))
    assert (whole - shifted).abs().max() > 1e-3, "G's output ignores where its input lies on the grid"
    assert torch.equal(whole, period_shift), "an origin shifted by whole periods must change nothing"
    for tile in (6, 9, 40):
        tiled = generate_tiled(g, x, tile, torch.device("cpu"), noise=z)
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0), (
            f"tile {tile}: tiled G differs from the whole image by {(tiled - whole).abs().max():.3g}: tiles are not told their origin")


def test_grid_generator_round_trips_through_the_generator_file(tmp_path):
    g = _grid_generator(period=4)
    save_generator(g, tmp_path / "g.safetensors", step=1, scale=2)
    h, _ = load_generator(tmp_path / "g.safetensors")
    assert h.grid_period == 4 and h.arch() == g.arch()
    x = torch.rand(1, 3, 12, 12)
    z = g.make_noise(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(h(x, z, origin=(1, 2)), g(x, z, origin=(1, 2)))
    with pytest.raises(ValueError, match="grid_period"):
        Generator(grid_period=1)


def test_discriminator_sees_the_phase():
    torch.manual_seed(0)
    d = Discriminator(grid_period=8, norm="none").eval()
    assert d.net.net[0].in_channels == 3 + 16
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        moved = (d(x) - d(x, origin=(0, 3))).abs().max()
        shifted_by_periods = (d(x) - d(x, origin=(8, 16))).abs().max()
    assert moved > 1e-4, "D's logits ignore where its input lies on the grid"
    assert shifted_by_periods == 0, "an origin moved by whole periods must change nothing"
    plain = Discriminator(norm="none").eval()
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x, origin=(0, 3))), "a D without a grid must ignore the origin"


def test_crops_share_a_grid_phase_per_micro_batch_and_real_lr_is_not_flipped():
    s, grid, crop = 2, 8, 16

    # Pixel values encode their position (channel 0: row, 1: column), so a crop tells where it came from.
    def coded(side):
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        return torch.stack([ys, xs, torch.zeros_like(ys)]).to(torch.uint8).expand(6, 3, side, side).contiguous()
    hr, lr = coded(64), coded(40)
    data = MicroBatches(hr, lr, batch_size=6, seed=0, scale=s, crop_size=crop, flip=True, grid=grid)
    phases = set()
    for m in range(30):
        hr_c, lr_c = data[m]
        oy, ox = data.grid_phase(m)
        assert data.grid_phase(m) == (oy, ox) and 0 <= oy < grid and 0 <= ox < grid
        phases.add((oy, ox))
        assert hr_c.shape[-1] == crop * s and lr_c.shape[-1] == crop
        top, left = lr_c[:, 0, 0, 0], lr_c[:, 1, 0, 0]
        assert bool((top % grid == oy).all()) and bool((left % grid == ox).all()), (
            "a real-LR crop does not start at its micro-batch's grid phase")
        assert bool((lr_c[:, 1, 0, 1] == left + 1).all()), "a real-LR crop was flipped: its grid would move"
        hr_top, hr_left = hr_c[:, 0, 0, 0], hr_c[:, 1, :, :].amin(dim=(1, 2))  # HR may be flipped: its leftmost column
        assert bool((hr_top % (grid * s) == s * oy).all()) and bool((hr_left % (grid * s) == s * ox).all()), (
            "an HR crop's Xb does not start at the micro-batch's grid phase")
    # Phases vary, so a phase says nothing about the distance to a crop's border.
    assert len(phases) > 10, f"only {len(phases)} grid phases in 30 micro-batches"
    plain = MicroBatches(hr, lr, batch_size=6, seed=0, scale=s, crop_size=crop, flip=True)
    assert plain.grid_phase(3) == (0, 0)
    assert any(bool((plain[m][1][:, 1, 0, 1] < plain[m][1][:, 1, 0, 0]).any()) for m in range(20)), (
        "without a grid, real LR images must still be flipped sometimes")


def test_training_steps_place_g_and_d_on_each_micro_batchs_grid_phase():
    from accelerate import Accelerator

    from dsgan_cli.engines.train import discriminator_step, generator_step
    from dsgan_cli.method.losses import GeneratorLoss

    seen = []

    class Recording(torch.nn.Module):
        """Records (network, which micro-batch's input, origin): each input is filled with its micro-batch number."""

        def __init__(self, net, name):
            super().__init__()
            self.net, self.name = net, name

        def forward(self, x, **kw):
            seen.append((self.name, x, kw.get("origin")))
            return self.net(x, **kw)

    torch.manual_seed(0)
    g, d = Recording(_grid_generator(4).train(), "G"), Recording(Discriminator(grid_period=4, norm="none"), "D")
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    xbs = [torch.full((2, 3, 8, 8), float(m)) for m in range(3)]
    reals = [torch.full((2, 3, 8, 8), 10.0 + m) for m in range(3)]
    origins = [(1, 2), (3, 0), (0, 1)]
    acc = Accelerator(cpu=True)
    for keep_graph in (True, False):
        seen.clear()
        xds = discriminator_step(acc, g, d, opt_d, xbs, reals, keep_graph=keep_graph, origins=origins)[0]
        generator_step(acc, g, d, opt_g, GeneratorLoss(), xbs, xds, keep_graph=keep_graph, origins=origins)
        fakes = {id(xd): m for m, (xd, _) in enumerate(xds)}
        for name, x, origin in seen:
            if name == "G" or float(x.min()) >= 10:  # an Xb or a real LR batch: its value names its micro-batch
                m = int(x.flatten()[0]) % 10
            else:  # D on a generated batch: the same tensor, or detached from it, as G's output m
                m = next((fakes[k] for k in fakes if k == id(x)), None)
                if m is None:
                    m = min(range(3), key=lambda j: float((x - xds[j][0]).abs().max()))
            assert origin == origins[m], f"{name} ran on micro-batch {m} with origin {origin}, not {origins[m]}"
        assert {n for n, _, _ in seen} == {"G", "D"} and len(seen) >= 9


@pytest.mark.slow
def test_cli_trains_and_degrades_with_a_grid(tmp_path):
    write_images(tmp_path / "hr", 4, 32, seed=1)
    write_images(tmp_path / "lr", 4, 16, seed=2, noise=8)
    run = tmp_path / "run"
    sets = ["--set", f"data.hr_dir='{tmp_path / 'hr'}'", "--set", f"data.lr_dir='{tmp_path / 'lr'}'",
            "--set", "model.grid_period=4", "--set", "data.crop_size=8", "--set", f"train.output_dir='{run}'"]
    r = run_cli("train", str(TINY_RECIPE), *sets)
    assert r.returncode == 0, r.stderr
    r = run_cli("degrade", str(tmp_path / "hr"), str(tmp_path / "out"), "--checkpoint", str(run / "generator.safetensors"),
                "--tile", "7")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    r = run_cli("train", str(TINY_RECIPE), *sets[:-2], "--set", "model.grid_period=1", "--set", f"train.output_dir='{tmp_path / 'r2'}'")
    assert r.returncode == 2 and "grid_period" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_generator_file_cannot_trade_noise_channels_for_grid_channels(tmp_path):
    """Metadata that adds up to the weights' input channels with a negative noise count is refused at load."""
    from safetensors.torch import load_file, save_file

    from dsgan_cli.plumbing.errors import DsganError

    g = Generator(n_res_blocks=1, channels=8)
    save_generator(g, tmp_path / "g.safetensors", step=1, scale=2)
    tensors = load_file(str(tmp_path / "g.safetensors"))
    first = tensors["block_input.0.weight"]
    tensors["block_input.0.weight"] = torch.zeros(first.shape[0], 3 + 16 - 16, *first.shape[2:])  # 3 channels: 3 - 16 + 2*8
    meta = {"format": "dsgan-generator/1", "scale": "2", "n_res_blocks": "1", "channels": "8",
            "noise_channels": "-16", "grid_period": "8"}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(DsganError, match="noise_channels"):
        load_generator(tmp_path / "bad.safetensors")
