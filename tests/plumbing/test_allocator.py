"""The CPU allocator setting training uses: freed activations are reused without new page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from dsgan_cli.plumbing.allocator import user_set_malloc

PROBE = """
import resource, sys, torch
from dsgan_cli.plumbing.allocator import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "default", file=sys.stderr)
def faults_of_a_step():
    # page faults of a step-like burst: activations of 1 to 64 MB allocated, written, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    acts = [torch.ones(n) for n in (16_000_000, 4_000_000, 250_000, 8_000_000, 16_000_000)]
    del acts
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_step(), faults_of_a_step()  # the heap settles in the first bursts
print(min(faults_of_a_step() for _ in range(4)))
"""


def _second_step_faults(mode: str, env_extra: dict[str, str] | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip()), r.stderr.strip()


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_memory_is_reused_without_page_faults_and_the_environment_wins():
    pages = 4 * 44_250_000 // os.sysconf("SC_PAGE_SIZE")  # the burst's bytes, in pages
    default, _ = _second_step_faults("default")
    kept, said = _second_step_faults("keep")
    assert said == "malloc keeps freed memory for reuse"
    assert default > pages // 2, f"{default} page faults: glibc's default was expected to map the large blocks afresh"
    assert kept < pages // 20, f"{kept} page faults for blocks freed and allocated again: the memory was not kept"
    user, said = _second_step_faults("keep", {"MALLOC_ARENA_MAX": "2"})
    assert said == "malloc left as the environment sets it" and user > pages // 2


def test_user_set_malloc_reads_glibc_tunables_and_malloc_variables():
    assert not user_set_malloc({})
    assert not user_set_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert user_set_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert user_set_malloc({"MALLOC_TRIM_THRESHOLD_": "1"})
