"""ppbench: accelerator price-performance benchmarking (see README.md and DESIGN.md)."""

# First, before anything imports torch: the environment as the user set it (ppharness/startenv.py).
from ppharness import startenv as startenv

__version__ = "0.1.0"
