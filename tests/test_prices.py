"""ppharness.facts.prices: `ppbench prices refresh` against a stubbed AWS Price List API.

Every API call goes to botocore's Stubber (moto has no pricing backend); the responses are shaped
like reference/prices-and-specs.md section 5 and seeded with catalog prices. No test touches the
network: the stub answers before any request is signed or sent, and the credentials are fake.
"""

from __future__ import annotations

import difflib
import json
import shutil
import sys
from datetime import date
from pathlib import Path

import pytest

from ppharness.errors import BenchError
from ppharness.facts import catalog, prices

boto3 = pytest.importorskip("boto3", reason="the aws extra (boto3) is not installed")
from botocore.stub import Stubber  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TODAY = date(2026, 9, 1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    for name in ("instances.yaml", "accelerators.yaml"):
        shutil.copy(CONFIGS / name, tmp_path / name)
    monkeypatch.setenv("PPBENCH_CONFIG_DIR", str(tmp_path))
    yield tmp_path
    catalog._load_instances.cache_clear()


def product(instance: str, on_demand: float | None, reserved: dict | None = None) -> str:
    """One GetProducts PriceList entry (a JSON string), as the API returns it."""
    terms: dict = {"OnDemand": {}, "Reserved": {}}
    if on_demand is not None:
        dims = {"SKU.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": f"{on_demand:.10f}"}}}
        terms["OnDemand"]["SKU.JRTCKXETXF"] = {"offerTermCode": "JRTCKXETXF", "priceDimensions": dims}
    for code, (attrs, hourly, upfront) in (reserved or {}).items():
        dims = {f"SKU.{code}.1": {"unit": "Hrs", "pricePerUnit": {"USD": str(hourly)}}}
        if upfront:
            dims[f"SKU.{code}.2"] = {"unit": "Quantity", "pricePerUnit": {"USD": str(upfront)}}
        terms["Reserved"][f"SKU.{code}"] = {"termAttributes": attrs, "priceDimensions": dims}
    attrs = {"instanceType": instance, "regionCode": "us-east-1", "operatingSystem": "Linux"}
    return json.dumps({"product": {"productFamily": "Compute Instance", "attributes": attrs}, "terms": terms})


def stubbed(*answers: tuple[str, list[str]]):
    """A pricing client whose get_products answers each (instance, PriceList) in turn."""
    api = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(api)
    for instance, items in answers:
        expected = {
            "ServiceCode": "AmazonEC2",
            "Filters": prices.filters(instance, "us-east-1"),
            "FormatVersion": "aws_v1",
            "MaxResults": 100,
        }
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": items}, expected)
    stub.activate()
    return api, stub


THREE_YR_ALL_UPFRONT = {"LeaseContractLength": "3yr", "OfferingClass": "standard", "PurchaseOption": "All Upfront"}
ONE_YR_NO_UPFRONT = {"LeaseContractLength": "1yr", "OfferingClass": "standard", "PurchaseOption": "No Upfront"}


def test_fetch_reads_on_demand_and_the_reserved_term():
    reserved = {"R1": (THREE_YR_ALL_UPFRONT, 0.0, 262800.0), "R2": (ONE_YR_NO_UPFRONT, 14.0, 0)}
    api, stub = stubbed(("trn1.32xlarge", [product("trn1.32xlarge", 21.5, reserved)]))
    got = {f.basis: f for f in prices.fetch("trn1.32xlarge", "us-east-1", api)}
    stub.assert_no_pending_responses()
    assert got["on_demand"].usd_per_hour == pytest.approx(21.5)
    # effective hourly = upfront / (8760 h x 3 years) + hourly
    assert got["ri_effective"].usd_per_hour == pytest.approx(262800.0 / 26280)
    assert "3yr standard All Upfront" in got["ri_effective"].note


def test_refresh_appends_a_dated_sourced_entry_and_keeps_history(config_dir):
    before = (config_dir / "instances.yaml").read_text()
    api, stub = stubbed(("p4d.24xlarge", [product("p4d.24xlarge", 19.5)]))
    changes = prices.refresh(["p4d.24xlarge"], api=api, today=TODAY)
    stub.assert_no_pending_responses()
    assert [(c.basis, c.old, c.new, c.written) for c in changes] == [("on_demand", 21.957642, 19.5, True)]
    after = (config_dir / "instances.yaml").read_text()
    added = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("+ ", "- ")]
    assert added == [
        '+       - {basis: "on_demand", region: "us-east-1", usd_per_hour: 19.5, since: "2026-09-01", '
        'source: "AWS Price List API GetProducts 2026-09-01", date: "2026-09-01", note: "on-demand, Linux, shared tenancy"}'
    ]
    # History: the pre-cut, post-cut and new prices all answer for their dates.
    assert catalog.price("p4d.24xlarge", on=TODAY).usd_per_hour == 19.5
    assert catalog.price("p4d.24xlarge", on=TODAY).since == TODAY
    assert catalog.price("p4d.24xlarge", on=date(2025, 7, 1)).usd_per_hour == pytest.approx(21.957642)
    assert catalog.price("p4d.24xlarge", on=date(2022, 10, 10)).usd_per_hour == pytest.approx(32.7726)


def test_an_unchanged_price_writes_nothing(config_dir):
    before = (config_dir / "instances.yaml").read_bytes()
    api, _ = stubbed(("trn1.32xlarge", [product("trn1.32xlarge", 21.5)]))
    changes = prices.refresh(["trn1.32xlarge"], api=api, today=TODAY)
    assert [(c.basis, c.written) for c in changes] == [("on_demand", False), ("ri_effective", False)]
    assert changes[1].new is None  # no reserved term offered in this answer
    assert (config_dir / "instances.yaml").read_bytes() == before


def test_dry_run_reports_but_writes_nothing(config_dir):
    before = (config_dir / "instances.yaml").read_bytes()
    api, _ = stubbed(("g5.xlarge", [product("g5.xlarge", 0.9)]))
    (change,) = prices.refresh(["g5.xlarge"], api=api, today=TODAY, dry_run=True)
    assert (change.old, change.new, change.written) == (1.006, 0.9, False)
    assert (config_dir / "instances.yaml").read_bytes() == before


def test_an_empty_prices_list_gets_its_first_entry(tmp_path):
    path = tmp_path / "instances.yaml"
    path.write_text("schema: 1\ninstances:\n  x1.large:\n    chips: 0\n    prices: []\n  x2.large:\n    chips: 0\n")
    api, _ = stubbed(("x1.large", [product("x1.large", 0.5)]))
    prices.refresh(["x1.large"], path=path, api=api, today=TODAY)
    import yaml

    doc = yaml.safe_load(path.read_text())
    assert doc["instances"]["x1.large"]["prices"][0]["usd_per_hour"] == 0.5
    assert doc["instances"]["x2.large"] == {"chips": 0}


def test_unknown_instance_lists_the_valid_ones(config_dir):
    with pytest.raises(BenchError, match=r"unknown instance 'p9.huge'; instances in instances.yaml: .*p4d.24xlarge"):
        prices.refresh(["p9.huge"], api=object(), today=TODAY)


def test_a_bad_region_is_refused_before_any_request(config_dir):
    with pytest.raises(BenchError, match="'US East' is not an AWS region code"):
        prices.refresh(["g5.xlarge"], region="US East", api=object(), today=TODAY)


def test_api_errors_become_one_line(config_dir):
    api = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(api)
    stub.add_client_error("get_products", service_error_code="AccessDeniedException", service_message="no access")
    stub.activate()
    before = (config_dir / "instances.yaml").read_bytes()
    with pytest.raises(BenchError, match="AWS Price List API request for g5.xlarge failed: .*AccessDenied"):
        prices.refresh(["g5.xlarge"], api=api, today=TODAY)
    assert (config_dir / "instances.yaml").read_bytes() == before


def test_ambiguous_answers_are_refused(config_dir):
    api, _ = stubbed(("g5.xlarge", [product("g5.xlarge", 1.0), product("g5.xlarge", 1.2)]))
    with pytest.raises(BenchError, match="ambiguous on_demand price for g5.xlarge in us-east-1: 1, 1.2"):
        prices.refresh(["g5.xlarge"], api=api, today=TODAY)


def test_malformed_answers_are_refused():
    with pytest.raises(BenchError, match="unexpected Price List API response for g5.xlarge"):
        prices.parse_product('{"product": {}}', "g5.xlarge", "us-east-1")


def test_without_boto3_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    with pytest.raises(BenchError, match=r"pip install 'ppbench\[aws\]'"):
        prices.client()


def test_the_cli_command(config_dir, monkeypatch):
    from typer.testing import CliRunner

    from ppharness.cli import app

    api, stub = stubbed(("g5.xlarge", [product("g5.xlarge", 0.9)]))
    monkeypatch.setattr(prices, "client", lambda: api)
    result = CliRunner().invoke(app, ["prices", "refresh", "--instance", "g5.xlarge", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "g5.xlarge" in result.output and "would add" in result.output
    stub.assert_no_pending_responses()
    bad = CliRunner().invoke(app, ["prices", "refresh", "--instance", "p9.huge"])
    assert bad.exit_code == 2 and bad.output.startswith("error: unknown instance 'p9.huge'")
