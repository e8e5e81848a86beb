"""`ppbench prices refresh`: today's EC2 prices from the AWS Price List API into the catalog.

Owns the Price List query (boto3 `pricing` client, GetProducts; filters and response shape as in
reference/prices-and-specs.md section 5, the set Karpenter uses in production), the parsing of
on-demand and reserved terms, and the append-only edit of configs/instances.yaml: a changed price
becomes a new entry with `since: <today>` and its source, older entries stay as history, an
unchanged price writes nothing. The file is edited as text (its comments and YAML anchors are
documentation) and re-parsed before it is replaced, so a failed edit leaves it untouched.

This is the only code that talks to the network, and only when the user runs the command; the
`aws` extra provides boto3. Tests drive it with botocore's Stubber.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ppharness.errors import MAX_YAML_BYTES, BenchError, read_bounded
from ppharness.facts import catalog

# The Price List API is served from us-east-1 (also eu-central-1, ap-south-1) whatever region is priced.
API_REGION = "us-east-1"
# Linux, shared tenancy, no pre-installed software, capacity actually used, on-demand market.
BASE_FILTERS = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "marketoption": "OnDemand",
    "productFamily": "Compute Instance",
}
# The reserved term written as ri_effective: 3-year standard All Upfront, whose effective rate is
# closest to the Neuron pages' unspecified "RI-effective" rates already in the catalog (~0.38x
# on-demand). The note on each entry names the term.
RI_TERM = {"LeaseContractLength": "3yr", "OfferingClass": "standard", "PurchaseOption": "All Upfront"}
HOURS_PER_YEAR = 8760


@dataclass(frozen=True)
class Fetched:
    instance: str
    basis: str
    region: str
    usd_per_hour: float
    note: str


def client():  # -> botocore client; typed loosely so boto3 stays an optional import
    """A Price List API client; needs the `aws` extra (boto3) and AWS credentials."""
    try:
        import boto3  # optional vendor package (the aws extra)
    except ImportError:
        raise BenchError("prices refresh needs boto3: pip install 'ppbench[aws]'") from None
    return boto3.client("pricing", region_name=API_REGION)


def filters(instance: str, region: str) -> list[dict[str, str]]:
    values = {**BASE_FILTERS, "regionCode": region, "instanceType": instance}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in values.items()]


def _hourly(dimensions: dict[str, Any], years: int = 0) -> float:
    """Hourly rate of one term: its `Hrs` price plus any upfront `Quantity` fee spread over the term."""
    hourly = upfront = 0.0
    for dim in dimensions.values():
        usd = float(dim["pricePerUnit"]["USD"])
        if dim.get("unit") == "Hrs":
            hourly += usd
        elif dim.get("unit") == "Quantity" and years:
            upfront += usd
    return hourly + (upfront / (HOURS_PER_YEAR * years) if years else 0.0)


def parse_product(text: str, instance: str, region: str) -> list[Fetched]:
    """On-demand and (where offered) RI_TERM prices from one GetProducts PriceList entry."""
    try:
        item = json.loads(text)
        attrs = item["product"]["attributes"]
        terms = item.get("terms", {})
        if attrs.get("instanceType") != instance:
            return []
        found = []
        for term in terms.get("OnDemand", {}).values():
            usd = _hourly(term["priceDimensions"])
            if usd > 0:  # zero-priced SKUs exist (e.g. unused reservations); they are not a price
                found.append(Fetched(instance, "on_demand", region, usd, "on-demand, Linux, shared tenancy"))
        for term in terms.get("Reserved", {}).values():
            if all(term.get("termAttributes", {}).get(k) == v for k, v in RI_TERM.items()):
                usd = _hourly(term["priceDimensions"], years=int(RI_TERM["LeaseContractLength"][0]))
                note = "reserved 3yr standard All Upfront, effective hourly = upfront / 26280 h + hourly"
                found.append(Fetched(instance, "ri_effective", region, usd, note))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"unexpected Price List API response for {instance}: {exc!r}") from None
    return found


def fetch(instance: str, region: str, api) -> list[Fetched]:
    """One instance's prices in `region` (paginated GetProducts); distinct prices per basis are an error."""
    from botocore.exceptions import BotoCoreError, ClientError  # optional vendor package (the aws extra)

    found: list[Fetched] = []
    try:
        pages = api.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters(instance, region), FormatVersion="aws_v1", MaxResults=100
        )
        for page in pages:
            for text in page.get("PriceList", []):
                found += parse_product(text, instance, region)
    except (BotoCoreError, ClientError) as exc:
        raise BenchError(f"AWS Price List API request for {instance} failed: {exc}") from None
    by_basis: dict[str, list[Fetched]] = {}
    for f in found:
        by_basis.setdefault(f.basis, []).append(f)
    for basis, fs in by_basis.items():
        if len({round(f.usd_per_hour, 6) for f in fs}) > 1:
            prices = ", ".join(sorted({f"{f.usd_per_hour:g}" for f in fs}))
            raise BenchError(f"ambiguous {basis} price for {instance} in {region}: {prices}; not written")
    return [fs[0] for fs in by_basis.values()]


# ------------------------------------------------------------------ editing configs/instances.yaml


def _current(prices: list[dict], basis: str, region: str, on: date) -> float | None:
    """The usd_per_hour in effect on `on` among an instance's raw YAML price entries."""
    best: tuple[date, float] | None = None
    for p in prices:
        if p.get("basis") != basis or p.get("region") != region:
            continue
        since = p.get("since")
        since = date.min if since is None else date.fromisoformat(str(since))
        if since <= on and (best is None or since >= best[0]):
            best = (since, float(p["usd_per_hour"]))
    return None if best is None else best[1]


def entry(f: Fetched, today: date) -> dict[str, Any]:
    """The catalog entry for a fetched price, in the order of configs/instances.yaml."""
    day = today.isoformat()
    source = f"AWS Price List API GetProducts {day}"
    return {
        "basis": f.basis,
        "region": f.region,
        "usd_per_hour": f.usd_per_hour,
        "since": day,
        "source": source,
        "date": day,
        "note": f.note,
    }


def entry_line(fields: dict[str, Any]) -> str:
    # JSON scalars are valid YAML flow scalars, so json.dumps quotes every string safely.
    return "      - {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()) + "}"


def _insert(lines: list[str], name: str, new: list[str]) -> list[str]:
    """Lines with `new` entries appended to instance `name`'s `prices:` list (2/4/6-space layout)."""
    try:
        start = lines.index(f"  {name}:")
    except ValueError:
        raise BenchError(f"instance {name!r} not found as '  {name}:' in the catalog file; edit it by hand") from None
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith("   ")), len(lines)
    )
    for i in range(start + 1, end):
        if re.fullmatch(r"    prices:\s*\[\]\s*", lines[i]):
            return [*lines[:i], "    prices:", *new, *lines[i + 1 :]]
        if re.fullmatch(r"    prices:\s*", lines[i]):
            last = i
            for j in range(i + 1, end):
                if lines[j].startswith("      "):
                    last = j
                elif lines[j].strip() and not lines[j].lstrip().startswith("#"):
                    break
            return [*lines[: last + 1], *new, *lines[last + 1 :]]
    raise BenchError(f"instance {name!r} has no 'prices:' list in the catalog file; edit it by hand")


@dataclass(frozen=True)
class Change:
    instance: str
    basis: str
    region: str
    old: float | None
    new: float | None  # None: the API lists no such price (e.g. not offered in the region)
    written: bool

    @property
    def action(self) -> str:
        if self.new is None:
            return "not listed"
        if self.written:
            return "added"
        return (
            "unchanged"
            if self.old is not None and abs(self.old - self.new) <= 1e-9 * max(self.old, 1.0)
            else "would add"
        )


def refresh(
    instances: list[str] | None = None,
    region: str = "us-east-1",
    path: Path | None = None,
    api=None,
    today: date | None = None,
    dry_run: bool = False,
) -> list[Change]:
    """Fetch prices for `instances` (default: all in the file) and append the changed ones."""
    path = Path(path or catalog.config_dir() / "instances.yaml")
    today = today or date.today()
    if not re.fullmatch(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+", region):
        raise BenchError(f"{region!r} is not an AWS region code (like us-east-1, eu-central-1)")
    text = read_bounded(path, "catalog file", MAX_YAML_BYTES)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BenchError(f"cannot read catalog file {path}: {exc}") from None
    known = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(known, dict):
        raise BenchError(f"catalog file {path} has no 'instances:' mapping")
    names = instances or sorted(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(f"unknown instance {unknown[0]!r}; instances in {path.name}: {', '.join(sorted(known))}")
    api = api or client()
    changes, lines, appended = [], text.split("\n"), {}
    for name in names:
        fresh = {f.basis: f for f in fetch(name, region, api)}
        for basis in ("on_demand", "ri_effective"):
            old = _current(known[name].get("prices") or [], basis, region, today)
            f = fresh.get(basis)
            changed = f is not None and (old is None or abs(old - f.usd_per_hour) > 1e-9 * max(old, 1.0))
            if f is None and old is None:
                continue  # neither listed nor known: nothing to say
            changes.append(Change(name, basis, region, old, f and f.usd_per_hour, changed and not dry_run))
            if changed and not dry_run:
                appended.setdefault(name, []).append(entry(f, today))
        if name in appended:
            lines = _insert(lines, name, [entry_line(e) for e in appended[name]])
    if appended:
        _replace(path, "\n".join(lines), doc, appended)
    return changes


def _replace(path: Path, new_text: str, old_doc: dict, appended: dict[str, list[dict]]) -> None:
    """Check the edited text parses to the old document plus exactly the new entries, then swap it in."""
    expected = copy.deepcopy(old_doc)
    for name, entries in appended.items():
        expected["instances"][name]["prices"] = [*(expected["instances"][name].get("prices") or []), *entries]
    if yaml.safe_load(new_text) != expected:
        raise BenchError(f"editing {path} would change more than the new price entries; nothing written")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new_text)
        shutil.copymode(path, tmp)  # keep the catalog's permissions (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    catalog._load_instances.cache_clear()  # same-process readers see the new prices
