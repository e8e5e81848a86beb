"""Which EC2 instance a run is priced as: named in the run file, detected (DMI), or none."""

from __future__ import annotations

from dataclasses import dataclass

from ppharness.facts import catalog, sysinfo


@dataclass
class Pricing:
    instance: str | None
    source: str  # "config" (priced as), "dmi" (detected), or "none"
    reason: str = ""


def resolve_instance(cfg: object) -> Pricing:
    """The instance a run is priced as, from its run file's `instance` (a name, `auto` or `none`)."""
    detected = sysinfo.ec2_instance_type()
    if cfg.instance == "none":
        return Pricing(None, "none", "instance: none in the run file")
    if cfg.instance == "auto":
        if detected is None:
            return Pricing(None, "none", "instance: auto, but this host is not an EC2 instance (no DMI product name)")
        if detected not in catalog.instances():
            return Pricing(None, "none", f"detected EC2 type {detected} is not in configs/instances.yaml")
        return Pricing(detected, "dmi")
    return Pricing(cfg.instance, "dmi" if cfg.instance == detected else "config")
