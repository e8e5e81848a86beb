"""ppbench: accelerator price-performance benchmarking (see README.md and DESIGN.md)."""

__version__ = "0.1.0"
