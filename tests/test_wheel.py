"""The installed wheel beside Hugging Face `transformers` and its `kernels` package (`make
test-wheel`: a fresh venv with the CPU torch, transformers, kernels and this project's wheel,
never the checkout). The harness once installed top-level `kernels` and `bench` packages: from
the repository root a transformers model could not be built (`cannot import name 'CUDAProperties'
from 'kernels'`), and from anywhere else `ppbench kernels` failed (`cannot import name 'Geometry'
from 'kernels'`). Both are run here, from the repository root and from another folder."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.wheel

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
BIN = Path(sys.executable).parent
LLAMA = """
import torch, kernels, transformers
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).eval()
with torch.no_grad():
    logits = model(torch.randint(0, 256, (2, 16))).logits
print(json.dumps({"shape": list(logits.shape), "finite": bool(torch.isfinite(logits).all()),
                  "kernels": kernels.__file__, "transformers": transformers.__version__}))
"""


@pytest.fixture(scope="module", autouse=True)
def _installed_not_the_checkout():
    try:
        dist = importlib.metadata.distribution("ppharness")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the ppharness wheel is not installed here (make test-wheel builds and installs it)")
    if dist.read_text("direct_url.json") and '"editable": true' in dist.read_text("direct_url.json"):
        pytest.skip("ppharness is an editable install here; this test is for the wheel (make test-wheel)")
    for name in ("transformers", "kernels"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here (make test-wheel installs it)")


def python(code: str, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=cwd, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_wheel_installs_one_package_and_its_data():
    files = [str(f) for f in importlib.metadata.distribution("ppharness").files]
    tops = {f.split("/")[0] for f in files if "/" in f and not f.startswith("..")}  # ../bin/ppbench: the script
    tops = {t for t in tops if not t.endswith((".dist-info", ".data"))}
    assert tops == {"ppharness"}, tops  # no `bench`, no `kernels` written over another project's
    for data in ("ppharness/_data/configs/instances.yaml", "ppharness/_data/seeds/claims.yaml",
                 "ppharness/_data/configs/runs/default.yaml"):  # fmt: skip
        assert data in files


@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_a_transformers_model_builds_and_runs_beside_the_harness(tmp_path, where):
    cwd = REPO if where == "repository root" else tmp_path
    got = python(LLAMA, cwd)
    assert got["shape"] == [2, 16, 256] and got["finite"]
    assert Path(got["kernels"]).resolve().is_relative_to(SITE)  # Hugging Face's, not ours
    ours, theirs = python("import ppharness, kernels; print(json.dumps([ppharness.__file__, kernels.__file__]))", cwd)
    assert Path(theirs).resolve().is_relative_to(SITE)
    # `python -c` puts the current folder first on sys.path: at the root that is the checkout's
    # ppharness/ (the same code); anywhere else, the wheel's.
    home = REPO / "ppharness" if where == "repository root" else SITE
    assert Path(ours).resolve().is_relative_to(home)


@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_ppbench_kernels_runs_beside_transformers(tmp_path, where):
    cwd = REPO if where == "repository root" else tmp_path
    out = tmp_path / "out"
    args = ["kernels", "--backend", "cpu", "--kernel", "gemm", "--preset", "tiny", "--batch", "2", "--seq-len", "32",
            "--min-seconds", "0.02", "--out", str(out)]  # fmt: skip
    proc = subprocess.run([str(BIN / "ppbench"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = [json.loads(line) for f in out.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert records and all(r["workload"]["scenario"] == "kernel:gemm" for r in records)
    assert all(r["status"] == "ok" and r["harness"]["version"] for r in records)


def test_the_installed_command_finds_its_catalog_and_claims(tmp_path):
    """Outside any checkout the wheel's own configs/ and seeds/ are read (ppharness/paths.py)."""
    proc = subprocess.run([str(BIN / "ppbench"), "claims", "--format", "json", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)) >= 5
