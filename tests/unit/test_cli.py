"""The `styleloop` command line: bad arguments are one clear line and exit status 2, never
a stack trace; a wrong catalog path is reported before any slow work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from styleloop import cli


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("1k,10k,100k", [1_000, 10_000, 100_000]), ("1000", [1_000]), ("2M, 5", [2_000_000, 5])],
)
def test_sizes_accept_plain_and_suffixed_counts(text: str, sizes: list[int]) -> None:
    args = cli.build_parser().parse_args(["bench", "recommender", "--sizes", text])
    assert args.sizes == sizes


def test_default_sizes_match_the_help() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["bench", "recommender"]).sizes == [10_000, 100_000, 1_000_000]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "recommender", "--sizes", "10x"], "'10x' is not a positive count"),
        (["bench", "recommender", "--sizes", "0"], "'0' is not a positive count"),
        (["bench", "recommender", "--queries", "0"], "--queries: '0' is not an integer >= 1"),
        (["bench", "recommender", "--dim", "-3"], "--dim: '-3' is not an integer >= 1"),
        (["bench", "encoder", "--requests", "many"], "'many' is not an integer >= 1"),
        (["ingest", "c.jsonl", "--limit", "-1"], "--limit: '-1' is not an integer >= 0"),
        (["ingest", "c.jsonl", "--batch-size", "0"], "--batch-size: '0' is not an integer >= 1"),
        (["demo-catalog", "--out", "x", "--count", "0"], "'0' is not an integer >= 1"),
        (["up", "--gateway-port", "0"], "--gateway-port: '0' is not an integer >= 1"),
    ],
)
def test_bad_numbers_are_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_up_reports_a_missing_catalog_before_preparing_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    state = tmp_path / "state"
    code = cli.main(
        [
            "up",
            "--catalog",
            str(tmp_path / "no-such-catalog"),
            "--models-dir",
            str(models),
            "--state-dir",
            str(state),
            "--once",
            "--no-progress",
        ]
    )
    assert code == 2
    assert "no-such-catalog does not exist" in capsys.readouterr().err
    # Nothing was prepared, and no synthetic catalog stood in for the one asked for.
    assert not models.exists()
    assert not (state / "demo-catalog").exists()


def test_demo_catalog_into_an_unwritable_place_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli.main(["demo-catalog", "--out", str(blocker / "catalog"), "--count", "3"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_up_with_an_unwritable_state_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STYLELOOP_CATALOG", raising=False)
    monkeypatch.setenv("STYLELOOP_DATA_DIR", str(tmp_path / "no-data"))  # nothing configured
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    models = tmp_path / "models"
    code = cli.main(
        ["up", "--state-dir", str(blocker / "state"), "--models-dir", str(models), "--once"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "Not a directory" in err and "Traceback" not in err
    assert not models.exists()
