"""ppharness.judge.claims: the claims file, break-even ratios, required MFU and verdicts.

Prices and peaks come from the real configs/ catalog; results are fixtures
(tests/results_fixtures.py), never measurements.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from results_fixtures import frame, record

from ppharness.errors import BenchError
from ppharness.judge import claims, compare
from ppharness.present.report import reasons

TODAY = date(2026, 8, 1)  # after the June 2025 P4/P5 price cut
SEEDS = ("000_d6a7cf6aa9454fd7.txt", "001_134384e55f64afd1.txt", "002_b7ee472ea7102221.txt")
SEEDS += ("003_2415eb2071087afa.txt", "004_ef8f3331c244fc65.txt")
FPT = 6e9  # flops per token of a fixture ~1B-parameter training step


def _claim(claim_id: str) -> claims.Claim:
    return next(c for c in claims.load_claims() if c.id == claim_id)


def trn1(step_s=0.01, batch=8, instance="trn1.32xlarge", devices=32, share=1.0, **kw):
    return record(
        instance, backend="neuron-xla", accelerator="trainium1", preset="llama3-1b-shape", dtype="bfloat16",
        batch=batch, seq_len=2048, step_s=step_s, usd_per_hour=21.5, devices_used=devices, share=share,
        flops_per_token=FPT, **kw,
    )  # fmt: skip


def p4d(step_s=0.01, batch=8, devices=8, share=1.0, **kw):
    return record(
        "p4d.24xlarge", backend="cuda", accelerator="a100-sxm4-40gb", preset="llama3-1b-shape", dtype="bfloat16",
        batch=batch, seq_len=2048, step_s=step_s, usd_per_hour=21.957642, devices_used=devices, share=share,
        flops_per_token=FPT, **kw,
    )  # fmt: skip


def _evaluate(tmp_path, claim_id, recs):
    rows = compare.prepare(frame(tmp_path, recs) if recs else pd.DataFrame()).usable
    return claims.evaluate(_claim(claim_id), rows, today=TODAY)


# ------------------------------------------------------------------ the claims file


def test_claims_file_covers_the_seeds_and_the_aws_primary_claims():
    by_id = {c.id: c for c in claims.load_claims()}
    cited = {s for c in by_id.values() for s in c.sources}
    # Only seeds 001 (qualitative) and 003 ("40-50%") make a price-performance claim.
    assert {"001_134384e55f64afd1.txt", "003_2415eb2071087afa.txt"} <= cited
    assert by_id["trn1-vs-p4d-cost-to-train"].ratio == (2.0, 2.0)  # 50% lower cost -> 2x tokens/$
    assert by_id["trn1-vs-p4d-cost-to-train"].qualifier == "up to"
    assert by_id["trn1-vs-p4d-bf16-tflops"].ratio == (1.4, 1.4)
    assert by_id["inf2-price-performance"].ratio == (1.4, 1.4)
    assert by_id["trn2-vs-p5en-price-performance"].ratio == (1.3, 1.4)
    assert by_id["news-40-50-trainium"].ratio == (1.4, 1.5)
    readme = (Path(claims.CLAIMS_PATH).parent / "README.md").read_text()
    assert all(seed in readme for seed in SEEDS)


def test_every_claim_names_catalog_instances_of_its_family():
    from ppharness.facts import catalog

    for c in claims.load_claims():
        for side in (c.subject, c.baseline):
            assert side.instance in catalog.instances(), c.id
            assert side.instance.split(".")[0] == side.family, c.id


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(color="red"), "unknown key 'color'"),
        (lambda c: c.update(scenario="serve"), "unknown scenario 'serve'; valid: 'train', 'inference'"),
        (lambda c: c["claimed"].update(as_ratio=[1.5, 1.2]), "lo <= hi"),
        (lambda c: c["claimed"].update(as_ratio="lots"), "as_ratio must be a positive number"),
        (lambda c: c.update(date="last year"), "'date' must be a YYYY-MM-DD date"),
        (lambda c: c.update(subject="trn1"), "subject: must be a mapping"),
    ],
)
def test_bad_claims_files_get_one_clear_line(tmp_path, edit, message):
    import yaml

    doc = yaml.safe_load(claims.CLAIMS_PATH.read_text())
    edit(doc["claims"][0])
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(BenchError, match=message):
        claims.load_claims(path)


def test_unreadable_claims_files(tmp_path):
    with pytest.raises(BenchError, match="cannot read claims file"):
        claims.load_claims(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("claims: [unclosed")
    with pytest.raises(BenchError, match="malformed YAML"):
        claims.load_claims(tmp_path / "bad.yaml")


# ------------------------------------------------------------------ break-even and equal-MFU figures


def test_trn1_vs_p4d_break_even_moved_from_1_31x_to_1_96x():
    bes = claims.break_evens(_claim("trn1-vs-p4d-cost-to-train"), TODAY)
    on_demand = {b.when: b for b in bes if b.basis == "on_demand" and b.region == "us-east-1"}
    # 2.0 x 21.50 / 32.7726 (before the June 2025 cut) and 2.0 x 21.50 / 21.957642 (after)
    assert round(on_demand["claim date"].ratio, 2) == 1.31
    assert round(on_demand["today"].ratio, 2) == 1.96
    assert on_demand["claim date"].usd_baseline == pytest.approx(32.7726)
    # At equal MFU: (16 x 190 / 21.50) / (8 x 312 / 21.957642) = 1.24x tokens per dollar today
    assert on_demand["today"].equal_mfu == pytest.approx((3040 / 21.5) / (2496 / 21.957642))


def _trn2_vs(tmp_path, claim_id, gpu):
    kw = {"preset": "llama3-1b-shape", "dtype": "bfloat16"}
    recs = [record("trn2.48xlarge", accelerator="trainium2", devices_used=128, seed=1, **kw)]
    recs += [record(gpu, accelerator="h200-sxm", devices_used=8, step_s=0.02, seed=2, **kw)]
    return _evaluate(tmp_path, claim_id, recs)


def test_measured_but_unpriced_pairs_are_inconclusive(tmp_path):
    result = _trn2_vs(tmp_path, "trn2-vs-p5e-price-performance", "p5e.48xlarge")
    assert result.best.speed[0] == pytest.approx(2.0, rel=0.03)
    assert (result.verdict, result.verdict_today) == ("inconclusive", "inconclusive")


def test_trn2_vs_p5en_has_a_us_east_2_break_even_today_only(tmp_path):
    # on-demand us-east-2: trn2.48xlarge 35.76 (no date limit), p5en.48xlarge 63.296 since 2025-06-23
    result = _trn2_vs(tmp_path, "trn2-vs-p5en-price-performance", "p5en.48xlarge")
    assert result.basis == "on_demand us-east-2"
    assert result.needs == pytest.approx({"today": 1.3 * 35.76 / 63.296})  # 0.73x: 30% at its lower end
    assert (result.verdict, result.verdict_today) == ("inconclusive", "supported")  # no price on 2024-12-03


def test_claims_without_shared_prices_say_which_basis_each_side_has():
    result = claims.evaluate(_claim("trn2-vs-p5e-price-performance"), pd.DataFrame(), today=TODAY)
    assert result.break_even == [] and result.verdict == "not measured"
    # p5e.48xlarge is sold as Capacity Blocks only, and no trn2.48xlarge Capacity Block rate is known
    line = (
        "cannot be priced on the basis p5e.48xlarge is sold on (capacity_block us-east-2 only): no capacity_block"
        " price for trn2.48xlarge is known (on_demand us-east-2, spot us-east-2)"
    )
    assert any(r.startswith(line) for r in reasons(result))
    assert claims.unpriced(result.claim).startswith(line)


# ------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(
    ("speedup", "at_claim_date", "today"),
    # an "up to" claim below its figure is "not reproduced": a best case we did not reach, not refuted
    [(2.5, "supported", "supported"), (1.6, "supported", "not reproduced"), (1.0, "not reproduced", "not reproduced")],
)
def test_verdicts_follow_the_price_of_the_day(tmp_path, speedup, at_claim_date, today):
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", [trn1(step_s=0.01 / speedup, seed=1), p4d(seed=2)])
    assert result.best.speed[0] == pytest.approx(speedup, rel=0.03)
    assert (result.verdict, result.verdict_today) == (at_claim_date, today)
    # tokens per dollar = speed x price_baseline / price_subject, at each date's prices
    s = result.best.speed[0]
    line = f"that is {s * 32.7726 / 21.5:.2f}x (claim date) -> {s * 21.957642 / 21.5:.2f}x (today) the baseline's"
    assert any(r.startswith(line) for r in reasons(result))


def test_a_ci_straddling_the_break_even_is_inconclusive(tmp_path):
    recs = [trn1(step_s=0.01 / 1.96, spread=0.3, n=8, seed=3), p4d(spread=0.3, n=8, seed=4)]
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", recs)
    _, lo, hi = result.best.speed
    assert lo < 1.958 < hi
    assert result.verdict_today == "inconclusive"


def test_nothing_measured_still_gives_break_even_figures():
    result = claims.evaluate(_claim("trn1-vs-p4d-cost-to-train"), pd.DataFrame(), today=TODAY)
    assert result.verdict == result.verdict_today == "not measured"
    assert result.needs == pytest.approx({"claim date": 2 * 21.5 / 32.7726, "today": 2 * 21.5 / 21.957642})
    assert "no valid train results for the trn1 family (trn1.32xlarge)" in reasons(result)


def test_baseline_only_gives_the_subject_mfu_needed(tmp_path):
    # p4d at 200k tokens/s x 6e9 FLOP/token = 1,200 TFLOP/s (MFU 0.48 of 8 x 312)
    tokens_per_step = 8 * 2048
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", [p4d(step_s=tokens_per_step / 200_000, spread=0)])
    # subject MFU = break-even x 1,200 TFLOP/s / (16 chips x the Trainium1 peak published that day):
    # 210 TFLOPS bf16 per chip at the claim's date (2022-10-10), 190 since 2023-04-15
    assert result.required_mfu["claim date"] == pytest.approx(2 * 21.5 / 32.7726 * 1200 / 3360)
    assert result.required_mfu["today"] == pytest.approx(2 * 21.5 / 21.957642 * 1200 / 3040)
    assert "subject needs MFU 0.47 (claim date) -> 0.77 (today) - implausible, above 0.6" in reasons(result)
    assert result.verdict == "not measured"


def test_subject_only_gives_the_baseline_mfu_that_breaks_the_claim(tmp_path):
    tokens_per_step = 8 * 2048
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", [trn1(step_s=tokens_per_step / 100_000, spread=0)])
    # trn1 at 100k tokens/s = 600 TFLOP/s; the claim fails once p4d exceeds 600 / break-even TFLOP/s
    assert result.baseline_mfu_limit["today"] == pytest.approx(600 / (2 * 21.5 / 21.957642) / 2496)
    assert result.required_mfu == {}


def test_partial_and_smaller_instances_scale_to_the_claimed_ones(tmp_path):
    # trn1.2xlarge (2 of the 32 NeuronCores of a trn1.32xlarge) vs 1 of 8 GPUs of a p4d
    recs = [trn1(instance="trn1.2xlarge", devices=2, step_s=0.01, seed=5), p4d(devices=1, share=1 / 8, seed=6)]
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", recs)
    assert result.best.speed[0] == pytest.approx((32 / 2) / 8, rel=0.03)  # same step time, x16 vs x8
    assert "throughput scaled linearly by devices to the claim's instances (assumed, not measured)" in reasons(result)
    assert (
        "the verdict rests on: subject scaled 16x linearly from a partial-instance record (assumed), baseline scaled 8x"
        in "; ".join(reasons(result))
    )
    # linear: 2.0x >= the 1.96x break-even today; at 0.8 per doubling, 16x scales to 16 x 0.8^4 and
    # 8x to 8 x 0.8^3, so the ratio is 2.0 x 0.8 = 1.6x, below it
    assert result.best.sublinear_factor == pytest.approx(0.8**4 / 0.8**3)
    assert result.verdict_today == "supported" and result.sublinear["today"] == "not reproduced"
    assert "at sublinear scaling (0.8 per doubling of devices) the verdict would be" in "; ".join(reasons(result))


def test_a_whole_instance_record_beats_a_linearly_scaled_one(tmp_path):
    # 2 NeuronCores scaled x16 would claim 2.0x; the whole trn1.32xlarge measured 1.5x: it decides
    recs = [trn1(instance="trn1.2xlarge", devices=2, step_s=0.01, seed=15), p4d(devices=1, share=1 / 8, seed=16)]
    recs += [trn1(step_s=0.01 / 1.5 * 8, devices=32, seed=17), p4d(devices=8, step_s=0.01 * 8, seed=18)]
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", recs)
    assert result.best.speed[0] == pytest.approx(1.5, rel=0.03)
    assert not result.best.scaled and result.sublinear == {}
    kinds = "subject instance-level record (whole instance, no scaling), baseline instance-level record (whole instance, no scaling)"
    assert f"the verdict rests on: {kinds}" in reasons(result)


def test_invalid_rows_do_not_count(tmp_path):
    recs = [trn1(valid=False, reasons=["logits check failed"], seed=7), p4d(seed=8)]
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", recs)
    assert result.n_subject == 0 and result.verdict == "not measured"


def test_a_run_priced_as_a_trn1_but_run_elsewhere_is_not_a_trn1_measurement(tmp_path):
    laptop = record("trn1.32xlarge", backend="cpu", accelerator=None, preset="llama3-1b-shape", dtype="bfloat16")
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", [laptop, p4d(seed=2)])
    assert result.n_subject == 0 and result.verdict == "not measured"
    assert "ignored 1 record(s) priced as a claimed instance but run on another device" in reasons(result)


def test_peak_tflops_claim_compares_achieved_flops_and_cites_the_spec(tmp_path):
    result = _evaluate(tmp_path, "trn1-vs-p4d-bf16-tflops", [trn1(step_s=0.01 / 1.2, seed=9), p4d(seed=10)])
    assert result.needs == {"claim date": 1.4, "today": 1.4}
    assert result.verdict == "not supported"  # 1.2x < 1.4x, and not an "up to" claim
    # held against the peaks published on each date: 16 x 210 at launch, 16 x 190 since 2023-04-15
    assert "catalog bfloat16 peaks (claim date): 3360 vs 2496 TFLOP/s per instance = 1.35x" in reasons(result)
    assert "catalog bfloat16 peaks (today): 3040 vs 2496 TFLOP/s per instance = 1.22x" in reasons(result)


def _inf(instance, step_s, scenario, seed, batch=2):
    acc = "inferentia2" if instance.startswith("inf2") else "a10g"
    return record(instance, accelerator=acc, scenario=scenario, step_s=step_s, usd_per_hour=1.0, seed=seed, batch=batch)


def test_prefill_alone_cannot_satisfy_a_serving_claim(tmp_path):
    recs = [_inf("inf2.xlarge", 0.005, "prefill", 1), _inf("g5.xlarge", 0.01, "prefill", 2)]
    recs += [_inf("inf2.xlarge", 0.01, "decode", 3), _inf("g5.xlarge", 0.01, "decode", 4)]
    result = _evaluate(tmp_path, "inf2-price-performance", recs)
    # break-even 1.4 x 0.7582 / 1.006 = 1.06: prefill's 2x does not count, decode's 1x is below it
    assert [c.workload for c in result.checks] == ["tiny/decode/float32"]
    assert result.verdict_today == "not reproduced"  # "up to": no counted workload reaches it
    assert "2 prefill row(s) not counted: prefill alone cannot satisfy a serving claim" in reasons(result)


def test_decode_rows_count_only_within_the_claims_tpot_bound(tmp_path):
    # A decode step makes one token per sequence: its step time is the TPOT. 0.2 s > the 100 ms bound.
    recs = [_inf("inf2.xlarge", 0.05, "decode", 5), _inf("g5.xlarge", 0.2, "decode", 6)]
    result = _evaluate(tmp_path, "inf2-price-performance", recs)
    assert _claim("inf2-price-performance").tpot_ms == 100
    assert result.n_baseline == 0 and result.verdict_today == "not measured"
    assert any("100 ms per output token; 1 row(s) over it not counted" in r for r in reasons(result))
    recs[1] = _inf("g5.xlarge", 0.09, "decode", 6)  # within the bound: 0.09 / 0.05 = 1.8x >= 1.06x
    result = _evaluate(tmp_path / "within", "inf2-price-performance", recs)
    assert result.verdict_today == "supported"


def test_combining_workload_verdicts():
    assert claims._combine(["supported", "not supported"], "up to") == "supported"
    assert claims._combine(["supported", "not supported"], "") == "not supported"
    assert claims._combine(["supported", "inconclusive"], "") == "inconclusive"
    assert claims._combine(["not supported", "inconclusive"], "up to") == "inconclusive"
    assert claims._combine(["not reproduced", "not reproduced"], "up to") == "not reproduced"
    assert claims._verdict((1.0, 0.9, 1.1), 2.0, "up to") == "not reproduced"
    assert claims._verdict((1.0, 0.9, 1.1), 2.0, "") == "not supported"
    assert claims._combine([], "") == "not measured"


def test_evaluate_all_on_no_results_lists_every_claim():
    results = claims.evaluate_all(pd.DataFrame(), today=TODAY)
    assert [r.claim.id for r in results] == [c.id for c in claims.load_claims()]
    assert {r.verdict for r in results} == {"not measured"}


def test_repeated_runs_pool_and_the_reasons_say_how_many(tmp_path):
    recs = [trn1(step_s=0.004, seed=11), trn1(step_s=0.005, seed=12), p4d(seed=13), p4d(step_s=0.012, seed=14)]
    result = _evaluate(tmp_path, "trn1-vs-p4d-cost-to-train", recs)
    assert result.best.runs == (2, 2)
    assert result.best.speed[0] == pytest.approx(0.011 / 0.0045, rel=0.03)  # medians of the run medians
    assert any("2 and 2 run(s)" in r and "within-run" not in r for r in reasons(result))
    latest = claims.evaluate_all(frame(tmp_path, recs, "latest.jsonl"), [_claim("trn1-vs-p4d-cost-to-train")],
                                 TODAY, latest=True)[0]  # fmt: skip
    assert latest.best.runs == (1, 1) and any("within-run noise only" in r for r in reasons(latest))


def _serve(instance, step_s, tpot_p99_s, seed):
    """A serving level as ppharness/serve/runner.py records it: compare labels it `serve 64/16`, batch =
    concurrency, and its TPOT is the requests' p99 (fixture values, not measurements)."""
    rec = _inf(instance, step_s, "serve", seed, batch=4)
    rec["workload"].update(input_len=64, output_len=16)
    rec["metrics"].update(tpot_p50_s=tpot_p99_s / 2, tpot_p90_s=tpot_p99_s / 1.5, tpot_p99_s=tpot_p99_s)
    return rec


def test_serving_rows_count_for_an_inference_claim_within_the_p99_tpot_bound(tmp_path):
    recs = [_serve("inf2.xlarge", 0.05, 0.08, 7), _serve("g5.xlarge", 0.09, 0.15, 8)]
    result = _evaluate(tmp_path, "inf2-price-performance", recs)
    assert result.n_baseline == 0  # the g5 level's p99 TPOT, 150 ms, is over the 100 ms bound
    assert any("1 row(s) over it not counted" in r for r in reasons(result))
    recs[1] = _serve("g5.xlarge", 0.09, 0.09, 8)
    result = _evaluate(tmp_path / "within", "inf2-price-performance", recs)
    assert [c.workload for c in result.checks] == ["tiny/serve 64/16/float32"]
    assert result.verdict_today == "supported"  # 0.09 / 0.05 = 1.8x >= the 1.06x break-even
