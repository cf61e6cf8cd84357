"""What every benchmark leaves behind (`styleloop bench NAME --results DIR`, `make bench`):
NAME.json with the machine and the headline, a real PNG chart, and one SUMMARY.md over the
folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from styleloop import cli
from styleloop.bench import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chart(values: list[float | None]) -> report.Chart:
    return report.Chart("t", "ms", ["a", "b"], {"one": values, "two": [3.0, 4.0]})


def test_write_leaves_json_chart_and_a_summary_of_every_benchmark(tmp_path: Path) -> None:
    report.write(tmp_path, "first", {"x": 1}, ["first ratio 2.0x"], _chart([1.0, None]))
    report.write(tmp_path, "second", {"y": [1, 2]}, ["second p99 3 ms"], None)

    record = json.loads((tmp_path / "first.json").read_text())
    assert record["benchmark"] == "first"
    assert record["figures"] == {"x": 1}
    assert record["machine"]["cpus"] == os.cpu_count()
    assert record["chart"] == "first.png"
    assert (tmp_path / "first.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "second.png").exists()

    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "## first" in summary and "## second" in summary
    assert "- first ratio 2.0x" in summary and "- second p99 3 ms" in summary
    assert "![first](first.png)" in summary
    assert f"on {os.cpu_count()} CPU cores" in summary


def test_summary_skips_json_that_is_not_a_benchmark(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    assert "No benchmark has written here yet" in report.summarise(tmp_path).read_text()


def test_a_series_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 values for 2 labels"):
        report.draw(_chart([1.0]), tmp_path / "x.png")


def test_bench_recommender_writes_its_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real (small) run of one benchmark through the CLI, as `make bench` runs it."""
    argv = ["bench", "recommender", "--sizes", "500", "--queries", "10"]
    argv += ["--results", str(tmp_path), "--store-dir", str(tmp_path / "store")]
    assert cli.main(argv) == 0
    record = json.loads((tmp_path / "recommender.json").read_text())
    (summary,) = record["figures"]["summaries"]
    assert summary["reused"] is False and summary["disk_mib"] > 0
    assert 0.02 < summary["filtered_share"] < 0.08  # the "5% filter"
    queries = {row["query"] for row in record["figures"]["rows"]}
    assert queries == {"plain top-10", "filtered top-10", "recommend +2/-2"}
    assert all(
        row["qdrant_p99_ms"] > 0 and row["numpy_p99_ms"] > 0 for row in record["figures"]["rows"]
    )
    assert any("recall@10" in line for line in record["headline"])
    assert (tmp_path / "recommender.png").read_bytes()[:8] == PNG_MAGIC
    assert "## recommender" in (tmp_path / "SUMMARY.md").read_text()
    assert "wrote" in capsys.readouterr().out
    # A second run reopens the collection the first one built, with its build figures.
    assert cli.main(argv) == 0
    again = json.loads((tmp_path / "recommender.json").read_text())["figures"]["summaries"][0]
    assert again["reused"] is True and again["index_s"] == summary["index_s"]
    assert again["plain_recall_at_10"] == summary["plain_recall_at_10"]
    assert "reopened" in capsys.readouterr().out


def test_bench_all_takes_a_results_folder_and_an_optional_gateway() -> None:
    args = cli.build_parser().parse_args(["bench", "all", "--results", "out"])
    assert args.results == Path("out") and args.gateway is None
