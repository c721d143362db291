"""A corpus of bad and odd inputs, generated at test time (no committed binaries).

Each ``make_*`` function writes files under a folder and returns their paths.
:data:`BAD_IMAGES` names the files that must be rejected with a reason;
:data:`ODD_IMAGES` names valid-but-unusual images and the 8-bit RGB content
each must decode to.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: Bad image file name -> a word the rejection reason must contain.
BAD_IMAGES = {
    "empty.png": "empty",
    "truncated.png": "decode",
    "cut_jpeg.jpg": "decode",
    "text.png": "not an image",
    "bomb.png": "too large",
}

#: Valid but unusual images (their expected content is checked in the tests).
ODD_IMAGES = (
    "one_px.png",
    "gray16.png",
    "palette.png",
    "palette_trns.png",
    "cmyk.jpg",
    "rgba.png",
    "gray.png",
    "exif_rot6.jpg",
    "exif_rot8.jpg",
)

#: Names that exercise spaces and non-ASCII characters, in nested folders.
ODD_NAMES = ("a b/ñandú/photo with space.png", "日本/写真 é.png")

RED, BLUE = (220, 30, 30), (30, 30, 220)


# ----------------------------------------------------------------------------- raw PNG building


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose IHDR declares a huge size (valid CRCs, a short IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    """``img`` encoded in memory."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def pattern(width: int = 24, height: int = 16, seed: int = 0) -> np.ndarray:
    """A smooth deterministic RGB uint8 pattern (compresses well, survives JPEG)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), np.full_like(xx, int(rng.integers(40, 200)))], axis=-1
    )
    return arr.astype(np.uint8)


def halves(width: int = 32, height: int = 16) -> Image.Image:
    """Left half red, right half blue: shows which way an image was rotated."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = RED
    arr[:, width // 2 :] = BLUE
    return Image.fromarray(arr, "RGB")


def exif_jpeg(orientation: int) -> bytes:
    """The :func:`halves` image as a JPEG whose EXIF says to rotate it (6 = 90° CW, 8 = 90° CCW)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves(), "JPEG", quality=95, exif=exif.tobytes())


# ----------------------------------------------------------------------------- image corpus


def make_bad_images(folder: Path) -> dict[str, Path]:
    """Write every file of :data:`BAD_IMAGES` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    png = encode(Image.fromarray(pattern(), "RGB"), "PNG")
    jpg = encode(Image.fromarray(pattern(), "RGB"), "JPEG", quality=90)
    data = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "cut_jpeg.jpg": jpg[: len(jpg) // 2],
        "text.png": b"this is not a picture\njust some text\n",
        "bomb.png": bomb_png(),
    }
    out = {}
    for name, content in data.items():
        (folder / name).write_bytes(content)
        out[name] = folder / name
    return out


def make_odd_images(folder: Path) -> dict[str, Path]:
    """Write every file of :data:`ODD_IMAGES` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = pattern()
    g16 = np.array([[0, 257 * 100, 65535], [32768, 65535 // 3, 257]], dtype=np.uint16)
    pal = Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_t = Image.new("P", (4, 2))
    pal_t.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal_t.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)
    rgba[..., 3] = [[0, 128, 255], [255, 128, 0]]
    images = {
        "one_px.png": encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"),
        "gray16.png": encode(Image.fromarray(g16), "PNG"),
        "palette.png": encode(pal, "PNG"),
        "palette_trns.png": encode(pal_t, "PNG", transparency=0),
        "cmyk.jpg": encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        "rgba.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "gray.png": encode(Image.fromarray(rgb[..., 0], "L"), "PNG"),
        "exif_rot6.jpg": exif_jpeg(6),
        "exif_rot8.jpg": exif_jpeg(8),
    }
    out = {}
    for name, content in images.items():
        (folder / name).write_bytes(content)
        out[name] = folder / name
    return out


def make_named_tree(root: Path, size: int = 16) -> list[Path]:
    """Valid images with spaces and non-ASCII names in nested folders, plus hidden files to ignore."""
    paths = []
    for i, rel in enumerate(ODD_NAMES):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern(size, size, seed=i), "RGB").save(p)
        paths.append(p)
    (root / ".hidden.png").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    (root / ".out.png.abc123.partial").write_bytes(b"half")
    (root / "notes.txt").write_text("not an image\n")
    return paths


def make_symlink_loop(root: Path) -> Path:
    """A folder holding a symlink to itself and one to its parent (loops for a naive walker)."""
    loop_dir = root / "loopy"
    loop_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(8, 8), "RGB").save(loop_dir / "inside.png")
    os.symlink(".", loop_dir / "self")
    os.symlink("..", loop_dir / "up")
    return loop_dir


# ----------------------------------------------------------------------------- recipes


def make_bad_recipes(folder: Path, base: Path) -> dict[str, tuple[Path, str]]:
    """Broken copies of the recipe ``base``: name -> (path, text the error must mention)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = base.read_text(encoding="utf-8")
    variants = {
        "syntax.toml": (text + "\n[train\nbroken = \n", "TOML"),
        "unknown_key.toml": (text.replace("[train]", "[train]\nlearning_rat = 0.1", 1), "learning_rat"),
        "wrong_type.toml": (text.replace("batch_size = 4", 'batch_size = "four"', 1), "batch_size"),
        "negative_lr.toml": (text + "\n[optim]\nlr = -0.001\n", "lr"),
    }
    out = {}
    for name, (content, must) in variants.items():
        (folder / name).write_text(content, encoding="utf-8")
        out[name] = (folder / name, must)
    return out


# ----------------------------------------------------------------------------- checkpoints


class _Payload:
    """Unpickling this creates ``marker``: proof that pickle code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(marker: Path) -> bytes:
    """A pickle stream whose loading would create ``marker``."""
    return pickle.dumps({"state_dict": _Payload(str(marker))}, protocol=2)


def make_bad_checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    """Checkpoints that must be refused: not safetensors, truncated, wrong architecture, pickle payloads."""
    import torch
    from safetensors.torch import save as st_save

    from dsgan_cli.engines.checkpoint import save_generator
    from dsgan_cli.method.models import Generator, GeneratorConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    good = folder / "good.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), good, step=1, scale=2)
    blob = good.read_bytes()
    wrong = Generator(GeneratorConfig(n_res_blocks=1, channels=8)).state_dict()
    wrong = {k: v.clone() for k, v in wrong.items()}
    wrong["block_input.0.weight"] = torch.zeros(8, 3, 5, 5)
    files = {
        "text.safetensors": b"definitely not a checkpoint\n",
        "truncated.safetensors": blob[: len(blob) // 2],
        "wrong_arch.safetensors": st_save(wrong, metadata={"n_res_blocks": "1", "channels": "8", "scale": "2"}),
        "foreign.safetensors": st_save({"encoder.weight": torch.ones(4, 4)}),
        "payload.pth": pickle_payload(marker),
        "payload.safetensors": pickle_payload(marker),
    }
    out = {"good.safetensors": good}
    for name, content in files.items():
        (folder / name).write_bytes(content)
        out[name] = folder / name
    # torch.save's zip format with the payload inside (what a real .pth looks like).
    zpath = folder / "payload_zip.pth"
    torch.save({"state_dict": _Payload(str(marker))}, zpath)
    out["payload_zip.pth"] = zpath
    return out


# ----------------------------------------------------------------------------- tree hashing


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or link target (symlinks) of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif not stat.S_ISREG(p.lstat().st_mode):  # a FIFO or device: reading it could block
                out[rel] = f"special:{stat.S_IFMT(p.lstat().st_mode):o}"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                out.setdefault(str((Path(dirpath) / d).relative_to(root)) + "/", "dir")
    return out


# ----------------------------------------------------------------------------- many CLI runs, one import

_DRIVER = r"""
import json, os, sys, tempfile
cases = json.loads(sys.argv[1])
import torch, PIL.Image, safetensors  # noqa: F401 - paid once, inherited by every forked run
from dsgan_cli import cli
results = []
for argv in cases:
    out = tempfile.TemporaryFile(); err = tempfile.TemporaryFile()
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        code = 0
        try:
            cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.seek(0); err.seek(0)
    results.append([os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"), err.read().decode(errors="replace")])
sys.__stdout__.write(json.dumps(results))
"""


def run_cli_many(cases: list[list[str]], cwd: Path | None = None, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run ``dsgan_cli.cli.main(argv)`` for each case in its own forked process, importing torch only once.

    Each case is a separate process with its own stdout/stderr and exit
    status, exactly as ``python -m dsgan_cli ARGV`` would give, without paying
    the torch import per case on a busy 2-core machine.
    """
    env = dict(os.environ, OMP_NUM_THREADS="2", DSGAN_OFFLINE="1")
    argvs = [[str(a) for a in c] for c in cases]
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(argvs)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return [subprocess.CompletedProcess(argv, rc, out, err) for argv, (rc, out, err) in zip(argvs, json.loads(proc.stdout))]


# ----------------------------------------------------------------------------- a fork server for kill tests

_ZYGOTE = r"""
import json, os, sys
import torch, accelerate, PIL.Image, safetensors  # noqa: F401 - imported once, inherited by every child
import dsgan_cli.cli, dsgan_cli.commands.degrade, dsgan_cli.data.sampling  # noqa
import dsgan_cli.engines.checkpoint, dsgan_cli.engines.train, dsgan_cli.method.models  # noqa
for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        _, status = os.waitpid(req["wait"], 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.environ.update(req["env"])
        code = 0
        try:
            if req["prelude"]:
                exec(req["prelude"], {})
            dsgan_cli.cli.main(req["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    """Starts ``dsgan_cli.cli.main(argv)`` runs as forked children of one process that imported torch once.

    Each run is a separate process (its own pid, session, stdout/stderr and
    exit status) that can be SIGKILLed like ``python -m dsgan_cli``; only the
    start-up imports are shared, which keeps kill-and-rerun tests fast.
    """

    def __init__(self, logs: Path):
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="2", DSGAN_OFFLINE="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.n = 0
        self.children: list[Child] = []

    def _ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "fork server died"
        return json.loads(line)

    def start(self, argv: list, env: dict | None = None, prelude: str = "") -> Child:
        """Start one run; returns a :class:`Child`."""
        self.n += 1
        out, err = self.logs / f"{self.n}.out", self.logs / f"{self.n}.err"
        pid = self._ask({"argv": [str(a) for a in argv], "env": env or {}, "prelude": prelude, "stdout": str(out), "stderr": str(err)})[
            "pid"
        ]
        child = Child(self, pid, out, err)
        self.children.append(child)
        return child

    def run(self, argv: list, **kw) -> subprocess.CompletedProcess:
        """Start a run and wait for it."""
        return self.start(argv, **kw).wait()

    def close(self) -> None:
        """Kill runs a failed test left behind (e.g. one sleeping in a hook), then stop the server."""
        for child in self.children:
            if child.rc is None:
                child.kill9()
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Child:
    """One forked run of the CLI."""

    def __init__(self, zygote: Zygote, pid: int, out: Path, err: Path):
        self.zygote, self.pid, self.out, self.err = zygote, pid, out, err
        self.rc: int | None = None

    def done(self) -> bool:
        """True once the process has exited (it stays a zombie until :meth:`wait`)."""
        if self.rc is not None:
            return True
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    def stopped(self) -> bool:
        """True while every thread of the process is stopped (SIGSTOP), e.g. paused by a test hook."""
        try:
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{self.pid}/task").iterdir()]
        except FileNotFoundError:
            return False
        return bool(states) and all(s == "T" for s in states)

    def wait(self) -> subprocess.CompletedProcess:
        if self.rc is None:
            self.rc = self.zygote._ask({"wait": self.pid})["rc"]
        return subprocess.CompletedProcess([], self.rc, self.out.read_text(), self.err.read_text())

    def kill9(self) -> subprocess.CompletedProcess:
        """SIGKILL the run's whole process group (its threads and workers too), then reap it."""
        import signal

        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait()
