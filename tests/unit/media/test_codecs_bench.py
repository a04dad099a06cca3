"""The `codecs` bench suite runs (tiny), checks what it times, and reports the backend choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.framework import discover_suites, run_suite
from media.codecs import opus


def test_codecs_suite_runs_and_reports_every_step(tmp_path: Path) -> None:
    suite = discover_suites().suites["codecs"]
    record = run_suite(suite, quick=True, params={"loops": "4", "repeats": "2"}, results_dir=tmp_path)
    figures = record.result.figures
    for name in (
        "g711_ulaw_encode_us",
        "g711_alaw_decode_us",
        "resample_48k_to_8k_us",
        "resample_8k_to_48k_us",
    ):
        assert 0.0 < figures[name] < 100_000.0
        assert record.result.units[name] == "µs"
    for backend in opus.available_backends():
        assert figures[f"opus_{backend}_encode_us"] > figures["g711_ulaw_encode_us"]
        assert f"opus_{backend}_decode_3pct_loss_us" in figures
    assert figures["transcoded_calls_per_core"] == pytest.approx(
        20_000.0 / figures["opus_pcmu_transcode_both_ways_us"]
    )
    if set(opus.available_backends()) == {"pyav", "opuslib"}:
        assert "opus encode opuslib/pyav" in record.result.ratios
        assert any("default decoder backend" in note for note in record.result.notes)
