"""DPO rounds on the tiny preset (random weights: what is checked is that the trainer's
gate, publishing and lineage behave, and that DPO moves held-out preferences)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from services.llm.adapters import AdapterRegistry
from services.trainer.ledger import Ledger, Pair
from services.trainer.rounds import (
    RoundSettings,
    held_out_sample,
    preference_accuracy,
    run_round,
)
from services.trainer.scheduler import RoundScheduler
from tests.conftest import run_cli

# Learnable and against the random model's own leaning (it prefers the Red Puma answer):
# chosen always cites the Blue Nike card.
FAST = RoundSettings(steps=40, learning_rate=1e-2, min_gain=0.05)


def pair(n: int, rng: random.Random) -> dict:
    size = rng.choice(["S", "M", "L", "XL"])
    return {
        "pair_id": f"p{n}",
        "prompt": [
            {"role": "system", "content": "You are StyleLoop's stylist."},
            {
                "role": "user",
                "content": f"Cards:\n[1] Red Puma Tshirt {size}\n[2] Blue Nike Tshirt {size}"
                "\n\nQuestion: a tee?",
            },
        ],
        "chosen": f"Try the Blue Nike Tshirt {size} [2].",
        "rejected": f"Try the Red Puma Tshirt {size} [1].",
    }


def pairs(count: int, seed: int, start: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [pair(start + n, rng) for n in range(count)]


def test_a_round_that_beats_the_serving_adapter_is_published_with_its_lineage(
    tiny_models: Path, tmp_path: Path
):
    registry = AdapterRegistry(tmp_path)
    train, held = pairs(12, 0), pairs(8, 1, 100)
    first = run_round(tiny_models, tmp_path, train, held, FAST)
    m = first.metrics
    assert first.published, first.reason
    assert m["preference_accuracy_before"] <= 0.5 < m["preference_accuracy_after"]
    assert m["steps"] == 40 and m["train_pairs"] == 12 and m["held_out_pairs"] == 8
    assert "rewards_accuracies_last" in m and "rewards_margins_last" in m
    info = registry.get(first.adapter_id)
    assert (
        info.parent == ""
        and info.metrics["preference_accuracy_after"] == m["preference_accuracy_after"]
    )
    assert (info.path / "adapter_model.safetensors").is_file()
    assert registry.read_active() == "", "published, not served: the caller decides"

    # The next round starts from it: its "before" is the first round's "after".
    again = RoundSettings(steps=2, learning_rate=1e-2, min_gain=0.0)
    second = run_round(tiny_models, tmp_path, train, held, again, parent=first.adapter_id)
    assert second.parent == first.adapter_id
    assert second.metrics["preference_accuracy_before"] == m["preference_accuracy_after"]
    # Each adapter records what its round ran with.
    assert (m["learning_rate"], m["beta"]) == (FAST.learning_rate, FAST.beta)
    assert registry.get(second.adapter_id).metrics["learning_rate"] == 1e-2
    assert registry.get(second.adapter_id).parent == first.adapter_id


def test_a_round_that_does_not_gain_enough_leaves_the_serving_adapter(
    tiny_models: Path, tmp_path: Path
):
    registry = AdapterRegistry(tmp_path)
    result = run_round(
        tiny_models, tmp_path, pairs(12, 0), pairs(8, 1, 100),
        RoundSettings(steps=1, learning_rate=1e-6, min_gain=0.5),
    )  # fmt: skip
    assert not result.published and result.adapter_id == ""
    assert "the serving adapter stays" in result.reason
    assert registry.list() == [] and registry.read_active() == ""


def test_pairs_longer_than_max_length_sit_the_round_out_and_none_fitting_is_said(
    tiny_models: Path, tmp_path: Path
):
    # A shopper's long history (many cards) makes a prompt the limit cannot hold: TRL
    # would cut its answer off, or drop it, and a round of nothing but those crashed.
    long = pairs(4, 2, 200)
    for p in long:
        p["prompt"][1]["content"] += "\n<history>" + " rejected: Red Puma Tshirt;" * 60
    settings = RoundSettings(steps=2, learning_rate=1e-2, min_gain=0.0, max_length=128)
    nothing = run_round(tiny_models, tmp_path, long, pairs(4, 1, 100), settings)
    assert not nothing.published and "none of the 4 training pairs fits in 128 tokens" in (
        nothing.reason
    )
    assert AdapterRegistry(tmp_path).list() == []
    mixed = run_round(tiny_models, tmp_path, long + pairs(6, 0), pairs(4, 1, 100), settings)
    assert mixed.published, mixed.reason
    assert mixed.metrics["train_pairs"] == 6 and mixed.metrics["train_pairs_too_long"] == 4


def test_a_round_measures_at_most_max_held_out_pairs_the_same_ones_in_any_order(
    tiny_models: Path, tmp_path: Path
):
    # Shoppers who judge every card make hundreds of held-out pairs; each costs four
    # forward passes, so a round measures a fixed sample of them.
    held = pairs(30, 1, 100)
    sample = held_out_sample(held, 7)
    assert len(sample) == 7 and len({p["pair_id"] for p in sample}) == 7
    assert held_out_sample(list(reversed(held)), 7) == sample
    assert held_out_sample(held[:5], 7) == held[:5]
    # As the pool grows, an old pair enters the sample only if it was in it before.
    grown = held_out_sample(held + pairs(30, 3, 500), 7)
    before = {p["pair_id"] for p in sample}
    assert all(p["pair_id"] in before or int(p["pair_id"][1:]) >= 500 for p in grown)
    settings = RoundSettings(steps=1, learning_rate=1e-6, min_gain=0.5, max_held_out=7)
    result = run_round(tiny_models, tmp_path, pairs(4, 0), held, settings)
    assert result.metrics["held_out_pairs"] == 7
    assert result.metrics["held_out_pairs_available"] == 30


def test_preference_accuracy_is_the_share_of_pairs_whose_chosen_answer_is_likelier(
    tiny_models: Path,
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(tiny_models)
    assert manifest is not None and manifest.llm is not None
    folder = tiny_models / manifest.llm.path
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
    )
    held = pairs(6, 3)
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in held]
    accuracy, margin = preference_accuracy(model, tokenizer, held, 256)
    flipped, flipped_margin = preference_accuracy(model, tokenizer, swapped, 256)
    assert accuracy + flipped == pytest.approx(1.0)  # no ties: one side of each pair wins
    assert margin == pytest.approx(-flipped_margin)


def ledger_with_pairs(folder: Path, train: list[dict], held: list[dict]) -> Ledger:
    ledger = Ledger(folder)
    rows = [(p, "train") for p in train] + [(p, "eval") for p in held]
    with ledger._lock, ledger._db:  # the pairs a stream of events would have made
        ledger._insert_pairs(
            Pair(
                pair_id=p["pair_id"], answer_id=f"a-{p['pair_id']}", split=split,
                prompt=[(m["role"], m["content"]) for m in p["prompt"]],
                chosen=p["chosen"], rejected=p["rejected"], chosen_item_id="b",
                rejected_item_id="r", provenance={}, adapter_id="", created=float(n),
            )
            for n, (p, split) in enumerate(rows)
        )  # fmt: skip
    return ledger


async def test_the_scheduler_runs_a_round_once_enough_pairs_arrived_and_serves_it(
    tiny_models: Path, tmp_path: Path
):
    ledger = ledger_with_pairs(tmp_path / "state", pairs(12, 0), pairs(8, 1, 100))
    adapters = tmp_path / "adapters"
    scheduler = RoundScheduler(
        ledger, tiny_models, adapters, FAST,
        min_pairs=13, interval_s=3600, check_s=60, llm=None, events=None,
    )  # fmt: skip
    assert await scheduler.run_once() is None, "12 new pairs < 13: not due"
    scheduler.min_pairs = 12
    result = await scheduler.run_once()
    assert result is not None and result.published, result
    assert AdapterRegistry(adapters).read_active() == result.adapter_id  # it serves now
    assert await asyncio.to_thread(ledger.pairs, "train", True) == [], "marked used"
    assert {p.round_id for p in ledger.pairs("train")} == {result.round_id}
    assert await scheduler.run_once() is None, "nothing new since"
    ledger.close()


def test_train_dpo_runs_one_round_from_a_pairs_file(tiny_models: Path, tmp_path: Path):
    file = tmp_path / "pairs.jsonl"
    rows = [{**p, "split": "train"} for p in pairs(12, 0)]
    rows += [{**p, "split": "eval"} for p in pairs(8, 1, 100)]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapters = tmp_path / "adapters"
    done = run_cli(
        "train", "dpo", "--pairs", str(file), "--models-dir", str(tiny_models),
        "--adapters-dir", str(adapters), "--steps", "40", "--learning-rate", "1e-2",
        "--activate", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["published"] and AdapterRegistry(adapters).read_active() == report["adapter_id"]
    listed = run_cli("adapters", "--adapters-dir", str(adapters), "list")
    assert listed.returncode == 0 and f"* {report['adapter_id']}" in listed.stdout
    back = run_cli("adapters", "--adapters-dir", str(adapters), "activate", "base")
    assert back.returncode == 0 and AdapterRegistry(adapters).read_active() == ""
    unknown = run_cli("adapters", "--adapters-dir", str(adapters), "show", "no-such")
    assert unknown.returncode == 2 and "no adapter" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"prompt": [], "chosen": "a", "rejected": "b"}\n', "pairs.jsonl:1: prompt must be"),
        ("not json\n", "pairs.jsonl:1:"),
        ('{"prompt": [{"role": "user", "content": "q"}], "chosen": "a"}\n', "pairs.jsonl:1:"),
        ('{"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b", '
         '"split": "train"}\n', "0 held-out pairs"),
    ],
)  # fmt: skip
def test_train_dpo_refuses_a_bad_pairs_file_clearly(tmp_path: Path, content: str, error: str):
    file = tmp_path / "pairs.jsonl"
    file.write_text(content)
    done = run_cli("train", "dpo", "--pairs", str(file), "--models-dir", str(tmp_path))
    assert done.returncode == 2 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("before", "after", "margins", "published", "said"),
    [
        (0.50, 0.60, (0.0, 0.1), True, "0.500 -> 0.600"),
        (0.50, 0.52, (0.0, 9.0), False, "gain +0.020 < 0.050"),  # room to rise: accuracy decides
        (1.00, 1.00, (3.19, 5.94), True, "at the ceiling), mean margin +3.19 -> +5.94"),
        (1.00, 1.00, (3.19, 3.50), False, "gain +0.31 < 1.00"),
        (1.00, 0.875, (2.36, 5.58), False, "at the ceiling"),  # accuracy fell: kept
        (0.96, 0.96, (1.0, 2.5), True, "at the ceiling"),
    ],
)
def test_the_gate_uses_the_margin_only_where_accuracy_cannot_rise_any_more(
    before: float, after: float, margins: tuple[float, float], published: bool, said: str
):
    """A measured round raised the mean margin +3.19 -> +5.94 at accuracy 1.0 -> 1.0 and was
    kept: accuracy alone cannot see a gain there."""
    from services.trainer.rounds import beats_serving

    better, why = beats_serving(before, after, *margins, RoundSettings())
    assert better is published and said in why


def test_simulate_train_runs_a_round_with_its_steps_learning_rate_and_max_length(
    tiny_models: Path, tmp_path: Path
):
    import argparse

    from styleloop.simulate import round_trainer

    ledger_with_pairs(tmp_path / "state", pairs(12, 0), pairs(8, 1, 100)).close()
    args = argparse.Namespace(
        trainer_state_dir=tmp_path / "state", adapters_dir=tmp_path / "adapters",
        models_dir=tiny_models, steps=3, learning_rate=2e-3, max_length=384, seed=0,
        no_progress=True, adapter_poll_s=0.0,
    )  # fmt: skip
    report = round_trainer(args)(0)
    assert (report["train_pairs"], report["held_out_pairs"]) == (12, 8)
    m = report["metrics"]
    assert (m["steps"], m["learning_rate"], m["max_length"]) == (3, 2e-3, 384), m
