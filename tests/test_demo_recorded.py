"""The README's demo output is reproduced (slow): ``make demo``'s pinned CPU kernels and thread count give the same
figures on every x86-64 machine with AVX2, so the recorded copy in the README is checked exactly."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: the lines compared: the classifier's and the heatmap network's test figures, the benchmark and ablation rows,
#: the predicted volume
KEEP = re.compile(r"^(\[3/9\] test|\[4/9\] heatmap network:|\| lse_heatmap |\| prior only|\| CAM |\[9/9\] 003\.nii\.gz:)")


def _demo_env() -> dict[str, str]:
    text = (REPO / "Makefile").read_text()
    line = next(x for x in text.splitlines() if x.startswith("DEMO_ENV ?="))
    return dict(kv.split("=", 1) for kv in shlex.split(line.split("?=", 1)[1]))


def _kept(lines) -> list[str]:
    return [re.sub(r" in \S+$", "", x.strip()) for x in lines if KEEP.match(x.strip())]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the recorded figures are of x86-64 kernels")
def test_make_demo_reproduces_the_readme(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("Output of\n`make demo`", 1)[1].split("```", 2)[1]
    want = _kept(block.splitlines())
    assert len(want) >= 7, want
    env = {**os.environ, **_demo_env()}
    out = subprocess.run([sys.executable, "-m", "hemwsl", "demo", "--out", str(tmp_path / "demo")], env=env,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _kept(out.stdout.splitlines()) == want
