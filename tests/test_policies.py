"""Project policies, locked in by tests (torchtitan's test_no_new_cli_options style)."""

import re
import subprocess
import sys

from conftest import REPO

DEVICE_CALLS = re.compile(r"torch\.cuda|torch_xla|torch_neuronx|torch\.neuron\b")


def test_device_code_stays_behind_the_backend_seam():
    """DESIGN.md, 'The backend seam': no device-specific calls outside ppharness/backends/."""
    leaks = []
    for path in (REPO / "ppharness").rglob("*.py"):
        if "backends" in path.relative_to(REPO / "ppharness").parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if DEVICE_CALLS.search(line):
                leaks.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not leaks, "\n".join(leaks)


def test_import_bench_needs_no_vendor_package():
    code = "import sys, ppharness.cli, ppharness.run.runner, ppharness.backends; ppharness.backends.discover(); " \
           "bad = [m for m in ('torch_xla', 'torch_neuronx', 'pynvml', 'boto3') if m in sys.modules]; " \
           "assert not bad, bad"  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def committed(folder: str) -> list[str]:
    """Names of the files git tracks in REPO/folder (every file there outside a git checkout):
    `make bench BENCH_OUT=results` may add an untracked file, documented once it is committed."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", folder], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return [p.name for p in (REPO / folder).glob("*")]
    return [p.rsplit("/", 1)[-1] for p in listed.stdout.decode().split("\0") if p]


def test_results_folder_is_documented():
    """Every committed results file is described in results/README.md."""
    results = REPO / "results"
    files = [name for name in committed("results") if name != "README.md"]
    assert files, "no committed results files found"
    readme = (results / "README.md").read_text() if (results / "README.md").exists() else ""
    assert all(name in readme for name in files), [n for n in files if n not in readme]
