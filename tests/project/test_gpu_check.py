"""scripts/gpu_check.sh: ready for a GPU machine, checked here for syntax and for its message where no GPU is."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_gpu_check_parses_and_its_python_blocks_compile():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = SCRIPT.read_text(encoding="utf-8")
    blocks = text.split("<<'EOF'\n")[1:]
    assert len(blocks) == 2, "the script's two inline Python programs"
    for block in blocks:
        compile(block.split("\nEOF\n")[0], "gpu_check.sh", "exec")


def test_gpu_check_says_why_it_stops_on_a_machine_without_a_gpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PY=sys.executable, OUT=str(tmp_path / "out.json"))
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().endswith("no CUDA GPU visible to torch here (torch.cuda.is_available() is False); run it on a GPU machine")
    assert not (tmp_path / "out.json").exists()
