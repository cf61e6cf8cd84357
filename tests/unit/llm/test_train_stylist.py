"""`styleloop train stylist` on the tiny model: the held-out answers' loss falls, and the
adapter lands in the registry whole, active, and loadable by the serving backend."""

from __future__ import annotations

import json
from pathlib import Path

from services.llm.adapters import AdapterRegistry
from services.llm.backends.local import LocalBackend
from styleloop.train_stylist import conversations, run
from tests.conftest import data_dir


def catalog(drawn: Path) -> Path:
    return data_dir() or drawn


def test_conversations_cite_cards_that_meet_the_question(drawn_catalog: Path):
    from styleloop.catalog import read_catalog

    rows = [r.item for r in read_catalog(catalog(drawn_catalog)).rows]
    examples = conversations(rows, "train", per_kind=5, seed=0, max_cards=5)
    assert examples
    for messages, answer in examples:
        assert messages[0][0] == "system" and "<cards>" in messages[1][1]
        assert "[1]" in answer  # every answer cites, and only card numbers that exist
        cards = messages[1][1].count("\n[")
        assert all(f"[{n}]" in messages[1][1] for n in range(1, cards + 1))


async def test_training_lowers_held_out_loss_and_publishes_a_servable_adapter(
    tiny_models: Path, drawn_catalog: Path, tmp_path: Path
):
    result = run(
        catalog(drawn_catalog),
        tiny_models,
        tmp_path / "adapters",
        steps=12,
        batch_size=4,
        rank=8,
        learning_rate=5e-3,
        max_length=384,
        max_minutes=5,
        seed=0,
        activate=True,
        progress=False,
        per_kind=10,
        eval_examples=8,
    )
    assert result["heldout_answer_loss_after"] < result["heldout_answer_loss_before"]
    registry = AdapterRegistry(tmp_path / "adapters")
    listed = registry.list()
    assert [a.adapter_id for a in listed] == [result["adapter_id"]]
    assert listed[0].base_model_id == "styleloop/tiny-qwen2"
    assert listed[0].metrics["train_steps"] == 12
    assert registry.read_active() == result["adapter_id"]
    meta = json.loads((listed[0].path / "styleloop_adapter.json").read_text())
    assert meta["create_time"] > 0 and meta["parent"] == ""
    backend = LocalBackend(tiny_models / "llm", model_id="tiny", model_version="v")
    backend.load()
    await backend.load_adapter(result["adapter_id"], listed[0].path)
    assert backend.peft is not None
