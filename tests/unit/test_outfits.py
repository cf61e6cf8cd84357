"""`styleloop train outfits` / `eval outfits`: reading outfits files, the FITB and AUC
questions, the split, the commands' errors, and that training learns what zero-shot cosine
cannot (a planted cross-slot pattern with the tiny preset; the shared Polyvore file when it
is configured)."""

from __future__ import annotations

import json

import pytest

from services.recommender.outfits import ScorerError, read_scorer
from styleloop.outfits import (
    SLOTS,
    OutfitsError,
    current_scorer,
    fake_outfits,
    fitb_questions,
    part_of,
    read_outfits,
)
from tests.conftest import THEMES, planted_outfits, run_cli


def test_read_outfits_keeps_named_items_in_known_slots_and_says_what_it_left_out(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(
        json.dumps(
            {
                "a": {"upper": {"name": "Blue  shirt"}, "shoe": {"name": "Boots"}},
                "b": {"upper": {"name": "Tee"}, "hat": {"name": "Cap"}},
                "c": {"upper": {"name": "Tee"}, "bottom": {}, "shoe": {"name": "Sneakers"}},
                "d": [],
            }
        )
    )
    data = read_outfits(path)
    assert [(o.outfit_id, o.items) for o in data.outfits] == [
        ("a", (("upper", "Blue shirt"), ("shoe", "Boots"))),
        ("c", (("upper", "Tee"), ("shoe", "Sneakers"))),
    ]
    skipped = "\n".join(data.skipped)
    assert "b: unknown slot 'hat'" in skipped and "b: fewer than 2 items" in skipped
    assert "c: slot 'bottom' has no name" in skipped and "d: not an object" in skipped


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("{not json", "not JSON"), ("[1, 2]", "expected an object")],
)
def test_unusable_outfits_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "o.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(OutfitsError, match=message):
        read_outfits(path)


def test_questions_are_fixed_by_the_seed_and_draw_from_the_same_slot(tmp_path):
    data = read_outfits(planted_outfits(tmp_path / "o.json", 40))
    questions = fitb_questions(data.outfits, seed=3)
    assert questions == fitb_questions(data.outfits, seed=3)
    assert len(questions) == 40 * len(THEMES)
    by_name = {n: s for o in data.outfits for s, n in o.items}
    outfit_of = {n: o for o in data.outfits for _, n in o.items}
    for q in questions:
        assert len(q.candidates) == 4 and len(set(q.candidates)) == 4
        true = q.candidates[0]  # the true item first; the methods never see the order
        assert (q.slot, true) in outfit_of[true].items
        assert set(q.context) == set(outfit_of[true].items) - {(q.slot, true)}
        assert {by_name[c] for c in q.candidates} == {q.slot}
        assert all(outfit_of[c] is not outfit_of[true] for c in q.candidates[1:])
    fakes = fake_outfits(data.outfits, seed=3)
    assert len(fakes) == len(data.outfits)
    for real, fake in zip(data.outfits, fakes, strict=True):
        assert [s for s, _ in real.items] == [s for s, _ in fake]
        assert all(r != f for (_, r), (_, f) in zip(real.items, fake, strict=True))


def test_the_split_is_a_stable_hash_of_the_outfit_id():
    parts = [part_of(f"outfit-{n}") for n in range(2000)]
    assert parts == [part_of(f"outfit-{n}") for n in range(2000)]
    share = {p: parts.count(p) / len(parts) for p in ("train", "tune", "test")}
    assert 0.6 < share["train"] < 0.7 and 0.07 < share["tune"] < 0.13
    assert 0.2 < share["test"] < 0.3


def test_training_learns_a_pattern_zero_shot_cosine_cannot_see(tiny_models, tmp_path):
    outfits = planted_outfits(tmp_path / "planted.json")
    scorer_dir = tmp_path / "scorer"
    trained = run_cli(
        "train", "outfits", "--outfits", str(outfits), "--models-dir", str(tiny_models),
        "--out", str(scorer_dir), "--no-progress", "--tower-epochs", "3",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "zero_shot_text" in trained.stdout and "trained_with_tower" in trained.stdout
    report = tmp_path / "eval.json"
    evaluated = run_cli(
        "eval", "outfits", "--outfits", str(outfits), "--models-dir", str(tiny_models),
        "--scorer", str(scorer_dir), "--json", str(report), "--no-progress",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(report.read_text())
    methods = result["methods"]
    assert result["part"] == "test"  # the scorer was trained on this file
    # Served: the scorer summed with its fine-tuned text tower (lambda picked on tune).
    assert result["fitb_accuracy"] == methods["trained_with_tower"]["fitb_accuracy"]
    assert methods["trained"]["fitb_accuracy"] > methods["zero_shot_text"]["fitb_accuracy"] + 0.2
    zero_shot = methods["zero_shot_text"]["fitb_accuracy"]
    assert methods["tower_cosine"]["fitb_accuracy"] > zero_shot + 0.2  # the tower learnt it too
    assert methods["trained_with_tower"]["fitb_accuracy"] > zero_shot + 0.2
    assert (scorer_dir / "tower" / "tower.onnx").is_file()
    assert methods["trained"]["compatibility_auc"] > methods["zero_shot_text"]["compatibility_auc"]
    assert 0.1 < methods["random"]["fitb_accuracy"] < 0.4
    scorer = read_scorer(scorer_dir)
    current = current_scorer(outfits, scorer_dir, scorer.model_version)
    assert current is not None and current["scorer_id"] == scorer.scorer_id
    assert current_scorer(outfits, scorer_dir, "another-encoder") is None
    assert scorer.word_buckets == 1024 and current["word_buckets"] == 1024  # the default
    meta = json.loads((scorer_dir / "scorer.json").read_text())
    del meta["word_buckets"]  # as a scorer from before item words were features
    (scorer_dir / "scorer.json").write_text(json.dumps(meta))
    assert current_scorer(outfits, scorer_dir, scorer.model_version) is None
    with pytest.raises(ScorerError, match="word_buckets"):
        read_scorer(scorer_dir)  # weights with words cannot be read without their width
    (scorer_dir / "scorer.json").write_text(json.dumps({**meta, "word_buckets": 1024}))
    outfits.write_text(outfits.read_text().replace("red top", "crimson top"))
    assert current_scorer(outfits, scorer_dir, scorer.model_version) is None


@pytest.mark.parametrize("command", ["train", "eval"])
def test_the_commands_report_bad_files_in_one_line(command, tmp_path):
    missing = run_cli(command, "outfits", "--outfits", str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    broken = run_cli(command, "outfits", "--outfits", str(bad))
    nothing = run_cli(command, "outfits", STYLELOOP_DATA_DIR=str(tmp_path))
    for proc, text in ((missing, "none.json"), (broken, "not JSON"), (nothing, "--outfits")):
        assert proc.returncode != 0
        assert text in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_slots_are_polyvores():
    assert SLOTS == ("upper", "bottom", "shoe", "bag", "accessory")
