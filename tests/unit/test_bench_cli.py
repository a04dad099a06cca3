"""`uc-edge bench` end to end: the real sip-parse suite in quick mode, listing, and operator errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from bench.cli import main
from bench.suites.sip_parse import SAMPLES, check_samples, parse_with_headers


@pytest.fixture(scope="module")
def sip_parse_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    return main(["run", "sip-parse", "--quick", "--out", str(out)]), out


def test_sip_parse_quick_writes_json_and_png(sip_parse_run: tuple[int, Path]) -> None:
    exit_code, out = sip_parse_run
    assert exit_code == 0
    [json_path] = out.glob("sip-parse-*.json")
    [png_path] = out.glob("sip-parse-*.png")
    data = json.loads(json_path.read_text())

    for key in ("figures", "units", "series", "ratios", "targets", "targets_met", "notes", "machine"):
        assert key in data
    figures = data["figures"]
    # Real measurements: plausible magnitudes, and typed headers cost more than the raw split.
    assert 1_000 < figures["parse_rate"] < 10_000_000
    assert 100 < figures["parse_headers_rate"] < figures["parse_rate"]
    for name in ("invite", "register", "ok200"):
        assert 0.1 < figures[f"{name}_parse_us"] < figures[f"{name}_headers_us"] < 100_000
        assert data["units"][f"{name}_parse_us"] == "µs"
    assert data["units"]["parse_rate"] == "messages/s"
    assert set(data["series"]) == {"parse only", "parse + headers"}
    points = data["series"]["parse only"]
    assert len(points) >= 5
    assert all(later[0] > earlier[0] for earlier, later in itertools.pairwise(points))
    assert data["targets"] == {"parse_headers_rate": 21_000.0}
    assert data["targets_met"]["parse_headers_rate"] == (figures["parse_headers_rate"] >= 21_000.0)
    assert data["machine"]["packages"]["sipmessage"]

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(png_path).shape[0] > 200


def test_list_shows_suites_and_their_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "sip-parse" in listing and "duration" in listing


def test_run_prints_figures_targets_and_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "sip-parse", "--quick", "--out", str(tmp_path)]
    argv += ["--param", "duration=0.2", "--param", "window=0.05", "--param", "loops=20"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "parse_headers_rate" in printed and "messages/s" in printed
    assert "21,000" in printed and ("not met" in printed or "met" in printed)
    assert "parse+headers / parse-only throughput" in printed
    assert str(tmp_path) in printed


def test_samples_are_realistic_and_parse_correctly() -> None:
    check_samples()
    for data in SAMPLES.values():
        message = parse_with_headers(data)
        assert len(message.body) == (message.content_length or 0)
    assert b"application/sdp" in SAMPLES["invite"] and b"Authorization: Digest" in SAMPLES["register"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "no-such-suite"], "unknown suite 'no-such-suite'"),
        (["run", "sip-parse", "--param", "nope=1"], "has no parameter nope"),
        (["run", "sip-parse", "--param", "duration"], "KEY=VALUE"),
        (["run", "sip-parse", "--param", "duration=soon"], "not a valid float"),
    ],
)
def test_operator_errors_are_one_clear_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_unwritable_results_directory_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["run", "sip-parse", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "cannot create results directory" in capsys.readouterr().err


def test_usage_errors_return_instead_of_exiting() -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
