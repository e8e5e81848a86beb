"""Tests for ppharness.facts.catalog: the shipped catalog's integrity, price history, cost formula, errors.

Figures checked here come from configs/*.yaml, each entry citing its own source (the Karpenter
price data at a commit for the June-2025 P4/P5 cut and the trn1/p4d ratios; the Neuron docs at a
commit for the Trainium1 peaks by date). Malformed-catalog cases use a
small fixture catalog written to a temp dir and selected with PPBENCH_CONFIG_DIR.
"""

from __future__ import annotations

import re
import textwrap
from datetime import date
from pathlib import Path

import pytest

from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.facts.catalog import CatalogError


@pytest.fixture(autouse=True)
def _shipped_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test starts from the repository's configs/ unless it points elsewhere itself.
    monkeypatch.delenv("PPBENCH_CONFIG_DIR", raising=False)


# ---------------------------------------------------------------- the shipped catalog


def test_every_instance_references_a_known_accelerator() -> None:
    accs = catalog.accelerators()
    for inst in catalog.instances().values():
        if inst.accelerator is None:
            assert inst.chips == 0, inst.name
        else:
            assert inst.accelerator in accs, inst.name
            assert inst.chips >= 1, inst.name


def test_every_figure_has_a_source_and_a_date() -> None:
    for acc in catalog.accelerators().values():
        assert acc.source.strip() and acc.date.strip(), acc.key
        assert all(v > 0 for v in acc.peak_tflops.values()), acc.key
    for inst in catalog.instances().values():
        assert inst.source.strip() and inst.date.strip(), inst.name
        assert inst.prices, f"{inst.name} has no price at all"
        for p in inst.prices:
            assert p.source.strip() and p.date.strip(), (inst.name, p)
            assert p.usd_per_hour > 0 and p.basis in catalog.BASES, (inst.name, p)


def test_issue_instances_are_present() -> None:
    required = [
        *("trn1.2xlarge", "trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge"),
        *("inf2.xlarge", "inf2.8xlarge", "inf2.24xlarge", "inf2.48xlarge"),
        *("inf1.xlarge", "inf1.24xlarge", "p4d.24xlarge", "p4de.24xlarge"),
        *("p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge", "p5.4xlarge"),
        *("g5.xlarge", "g5.48xlarge", "g6e.xlarge", "g6e.48xlarge", "g6.xlarge"),
        *("c7i.large", "c7i.xlarge", "c7i.2xlarge", "c7a.large", "c7a.xlarge"),
        *("c8i.xlarge", "m7i.xlarge", "c6i.xlarge"),
    ]
    assert set(required) <= set(catalog.instances())


def test_peaks_are_dense_per_chip() -> None:
    h100 = catalog.accelerator("h100-sxm")
    assert h100.peak_tflops_for("bfloat16") == 989.4  # 1,978.9 is the sparse headline
    assert h100.peak_tflops_for("float8") == 1978.9
    assert catalog.accelerator("trainium1").peak_tflops_for("bfloat16") == 190
    # No sourced A10G tensor figure: no number, so MFU stays null instead of a guess.
    assert catalog.accelerator("a10g").peak_tflops_for("bfloat16") is None
    assert catalog.accelerator("a100-sxm4-40gb").peak_tflops_for("float8") is None


def test_trainium1_peak_is_the_one_published_on_the_date() -> None:
    # trn1-arch.rst @7060a1c6 (2022-10-10): 210 bf16 / 52.5 fp32 per chip; @c2264e9a (2023-04-15): 190 / 47.5
    trn1 = catalog.accelerator("trainium1")
    assert trn1.peak_tflops_for("bfloat16", date(2022, 10, 10)) == 210
    assert trn1.peak_tflops_for("float32", date(2023, 4, 14)) == 52.5
    assert trn1.peak_tflops_for("bfloat16", date(2023, 4, 15)) == 190
    assert trn1.peak_tflops_for("bfloat16") == 190  # today: what MFU uses
    assert trn1.peak_history[-1].peak_tflops == trn1.peak_tflops
    assert all(p.source.startswith("aws-neuron/aws-neuron-sdk@") for p in trn1.peak_history)
    # an accelerator without a history has one peak for every date
    assert catalog.accelerator("h100-sxm").peak_tflops_for("bfloat16", date(2022, 1, 1)) == 989.4


def test_trn2_and_p5en_share_an_on_demand_price_in_us_east_2() -> None:
    assert catalog.price("trn2.48xlarge", "on_demand", "us-east-2").usd_per_hour == 35.76
    assert catalog.price("p5en.48xlarge", "on_demand", "us-east-2").usd_per_hour == 63.296
    # no us-east-2 p5en price from before the June 2025 cut is known: none answers the Trn2 launch date
    with pytest.raises(CatalogError, match="before its earliest entry"):
        catalog.price("p5en.48xlarge", "on_demand", "us-east-2", date(2024, 12, 3))


def test_the_catalog_cites_sources_not_paths_on_a_machine() -> None:
    for name in ("instances.yaml", "accelerators.yaml"):
        text = (catalog.config_dir() / name).read_text()
        assert not re.search(r"(?<![\w.])/(work|home|Users|tmp|root)/", text), name


def test_neuron_bandwidth_is_converted_from_gib() -> None:
    # 820 GiB/s in the Neuron docs; the catalog stores GB/s (1e9 B/s).
    assert catalog.accelerator("trainium1").mem_bw_gbps == pytest.approx(820 * 2**30 / 1e9, abs=0.01)


@pytest.mark.parametrize(
    ("name", "devices"),
    [
        ("trn1.2xlarge", 2),  # 1 chip x 2 NeuronCore-v2
        ("trn1.32xlarge", 32),
        ("trn2.48xlarge", 128),  # 16 chips x 8 NeuronCore-v3
        ("inf2.48xlarge", 24),
        ("inf1.24xlarge", 64),
        ("p4d.24xlarge", 8),
        ("g6e.xlarge", 1),
        ("c7a.large", 1),  # CPU-only: the whole instance is one device
    ],
)
def test_devices_per_instance(name: str, devices: int) -> None:
    assert catalog.instance(name).devices == devices


# ---------------------------------------------------------------- prices and history


def test_june_2025_cut_on_p4d() -> None:
    assert catalog.price("p4d.24xlarge", on=date(2025, 1, 1)).usd_per_hour == 32.7726
    assert catalog.price("p4d.24xlarge").usd_per_hour == 21.957642
    assert catalog.price("p4d.24xlarge", on=date(2025, 6, 23)).usd_per_hour == 21.957642
    assert catalog.price("p5.48xlarge", on=date(2024, 1, 1)).usd_per_hour == 98.32


def test_trn1_to_p4d_ratio_before_and_after_the_cut() -> None:
    # Reference 2b: the trn1.32xlarge / p4d.24xlarge list-price ratio went from 0.656 to 0.979.
    trn1 = catalog.price("trn1.32xlarge").usd_per_hour
    before = trn1 / catalog.price("p4d.24xlarge", on=date(2025, 1, 1)).usd_per_hour
    after = trn1 / catalog.price("p4d.24xlarge").usd_per_hour
    assert before == pytest.approx(0.656, abs=5e-4)
    assert after == pytest.approx(0.979, abs=5e-4)


def test_price_history_is_oldest_first() -> None:
    history = catalog.price_history("p5.48xlarge", "on_demand", "us-east-1")
    assert [p.usd_per_hour for p in history] == [98.32, 55.04]
    assert history[0].since is None and history[1].since == date(2025, 6, 23)


def test_other_bases_and_regions() -> None:
    assert catalog.price("trn1.32xlarge", "ri_effective").usd_per_hour == 8.197
    assert catalog.price("p5e.48xlarge", "capacity_block", "us-east-2").usd_per_hour == 43.26
    assert catalog.price("trn2.48xlarge", "spot", "us-east-2").usd_per_hour == 23.0631


# ---------------------------------------------------------------- cost formula and prorating


def test_usd_per_million_tokens_formula() -> None:
    # $3.60/h at 1 token/s: 3600 tokens cost $3.60, so 1e6 tokens cost $1000.
    assert catalog.usd_per_million_tokens(3.6, 1.0) == pytest.approx(1000.0)
    # trn1.32xlarge at $21.50/h, 1000 tokens/s on 2 of 32 NeuronCores:
    # 21.5 * (1/16) / (1000 * 3600) * 1e6 = 21.5 / 57.6 = 0.373263888...
    share = catalog.share(2, catalog.instance("trn1.32xlarge"))
    assert share == 1 / 16
    assert catalog.usd_per_million_tokens(21.5, 1000.0, share) == pytest.approx(21.5 / 57.6)


def test_share_of_a_cpu_instance_is_whole() -> None:
    assert catalog.share(1, catalog.instance("c7a.large")) == 1.0


@pytest.mark.parametrize("devices_used", [0, 33])
def test_share_out_of_range(devices_used: int) -> None:
    with pytest.raises(CatalogError, match="between 1 and 32"):
        catalog.share(devices_used, catalog.instance("trn1.32xlarge"))


@pytest.mark.parametrize(
    ("args", "bad"),
    [((1.0, 0.0), "tokens_per_s"), ((1.0, 10.0, 0.0), "share"), ((1.0, 10.0, 1.5), "share")],
)
def test_usd_per_million_tokens_rejects_bad_input(args: tuple[float, ...], bad: str) -> None:
    with pytest.raises(CatalogError, match=bad):
        catalog.usd_per_million_tokens(*args)


# ---------------------------------------------------------------- lookup errors


def test_unknown_instance_lists_valid_names() -> None:
    with pytest.raises(CatalogError, match="unknown instance 'p9.huge'") as e:
        catalog.instance("p9.huge")
    assert "trn1.32xlarge" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, BenchError)  # the CLI turns it into one line and exit code 2


def test_unknown_accelerator_lists_valid_keys() -> None:
    with pytest.raises(CatalogError, match="valid accelerators: .*h100-sxm"):
        catalog.accelerator("tpu-v5")


def test_unknown_basis_lists_valid_bases() -> None:
    with pytest.raises(CatalogError, match="valid bases: capacity_block, on_demand, ri_effective, spot"):
        catalog.price("p4d.24xlarge", basis="reserved")


def test_missing_region_names_what_exists() -> None:
    with pytest.raises(CatalogError, match="p4d.24xlarge has: .*on_demand/us-east-1"):
        catalog.price("p4d.24xlarge", region="eu-west-1")


def test_instance_without_on_demand_price_says_what_it_has() -> None:
    # trn2.48xlarge is not offered in us-east-1: on-demand and spot rows in us-east-2 only.
    with pytest.raises(CatalogError, match="trn2.48xlarge has: on_demand/us-east-2, spot/us-east-2"):
        catalog.price("trn2.48xlarge")


def test_match_device_name_respects_token_boundaries() -> None:
    assert catalog.match_device_name("NVIDIA L40S") == "l40s"
    assert catalog.match_device_name("NVIDIA L4") == "l4"
    assert catalog.match_device_name("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert catalog.match_device_name("NVIDIA H100 PCIe") == "h100-pcie"  # its own, lower peaks
    assert catalog.match_device_name("NVIDIA H100 NVL") is None  # no sourced peaks: no guess
    assert catalog.match_device_name("NVIDIA A100-SXM4-40GB") == "a100-sxm4-40gb"


# ---------------------------------------------------------------- malformed catalogs (fixtures)

ACCELERATORS = """\
schema: 1
accelerators:
  chip-a:
    vendor: test
    name: Test chip A
    cores_per_chip: 2
    peak_tflops: {bfloat16: 100}
    mem_bw_gbps: 1000
    memory_gib: 16
    source: fixture
    date: "2020-01-01"
"""

INSTANCES = """\
schema: 1
instances:
  box.large:
    accelerator: chip-a
    chips: 4
    vcpus: 8
    memory_gib: 32
    source: fixture
    date: "2020-01-01"
    prices:
      - {basis: on_demand, region: us-east-1, usd_per_hour: 2.0, since: "2024-01-01",
         source: fixture, date: "2024-01-01"}
"""


HISTORY = """\
    peak_history:
      - {since: null, peak_tflops: {bfloat16: 110}, source: fixture, date: "2020-01-01"}
      - {since: 2023-04-15, peak_tflops: {bfloat16: 100}, source: fixture, date: "2023-04-15"}
      - {since: 2024-04-15, peak_tflops: {bfloat16: 90}, source: fixture, date: "2024-04-15"}
"""


def test_fixture_peak_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accelerators = ACCELERATORS.replace("{bfloat16: 100}", "{bfloat16: 90}")
    accelerators = accelerators.replace("    memory_gib: 16\n", "    memory_gib: 16\n" + HISTORY)
    _write_catalog(tmp_path, accelerators, INSTANCES)
    monkeypatch.setenv("PPBENCH_CONFIG_DIR", str(tmp_path))
    chip = catalog.accelerator("chip-a")
    peaks = [chip.peak_tflops_for("bfloat16", date(y, 6, 1)) for y in (2010, 2023, 2024)]
    assert peaks == [110, 100, 90] and chip.peak_tflops_for("bfloat16") == 90


def _write_catalog(directory: Path, accelerators: str, instances: str) -> None:
    (directory / "accelerators.yaml").write_text(textwrap.dedent(accelerators))
    (directory / "instances.yaml").write_text(textwrap.dedent(instances))


def test_fixture_catalog_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_catalog(tmp_path, ACCELERATORS, INSTANCES)
    monkeypatch.setenv("PPBENCH_CONFIG_DIR", str(tmp_path))
    assert catalog.instance("box.large").devices == 8
    assert catalog.price("box.large", on=date(2024, 5, 1)).usd_per_hour == 2.0
    with pytest.raises(CatalogError, match="before its earliest entry"):
        catalog.price("box.large", on=date(2023, 12, 31))


@pytest.mark.parametrize(
    ("which", "old", "new", "message"),
    [
        ("acc", "    vendor: test\n", "    vendor: [unclosed\n", "malformed YAML"),
        ("inst", "instances:\n", "instances:\n  - : :\n bad", "malformed YAML"),
        (
            "inst",
            "accelerator: chip-a",
            "accelerator: chip-z",
            "unknown accelerator 'chip-z'.*chip-a",
        ),
        ("inst", "usd_per_hour: 2.0", "usd_per_hour: -2.0", "usd_per_hour"),
        ("inst", "source: fixture, date", "date", "'source' must be a non-empty string"),
        ("acc", "    source: fixture\n", "", "'source' must be a non-empty string"),
        ("acc", '    date: "2020-01-01"\n', "", "'date' must be a non-empty string"),
        ("inst", "basis: on_demand", "basis: reserved", "unknown basis 'reserved'"),
        ("inst", 'since: "2024-01-01"', 'since: "Jan 2024"', "'since' must be null or YYYY-MM-DD"),
        ("acc", "bfloat16: 100", "bf16: 100", "unknown key 'bf16'"),
        ("acc", "schema: 1", "schema: 2", "schema: 1"),
        ("inst", "    vcpus: 8\n", "    vcpus: 8\n    gpus: 8\n", "unknown key 'gpus'"),
        (
            "acc",
            "    memory_gib: 16\n",
            "    memory_gib: 16\n" + HISTORY,
            "must equal 'peak_tflops'",
        ),
        ("acc", "    memory_gib: 16\n", "    memory_gib: 16\n" + HISTORY.replace("2024-04-15", "2022-01-01"), "later"),
        ("acc", "    memory_gib: 16\n", "    memory_gib: 16\n    peak_history: []\n", "non-empty list"),
    ],
)
def test_bad_catalog_gives_one_line_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
    old: str,
    new: str,
    message: str,
) -> None:
    accelerators, instances = ACCELERATORS, INSTANCES
    if which == "acc":
        assert old in accelerators
        accelerators = accelerators.replace(old, new)
    else:
        assert old in instances
        instances = instances.replace(old, new)
    _write_catalog(tmp_path, accelerators, instances)
    monkeypatch.setenv("PPBENCH_CONFIG_DIR", str(tmp_path))
    with pytest.raises(CatalogError, match=message) as e:
        catalog.instances()
    assert "\n" not in str(e.value)


def test_missing_catalog_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPBENCH_CONFIG_DIR", str(tmp_path))
    with pytest.raises(CatalogError, match="cannot read catalog file"):
        catalog.accelerators()
