"""A round's candidate answers the chat evaluation beside the serving adapter before it
serves: through the real llm service (tiny model) and its ``ChatRequest.adapter_id``."""

from __future__ import annotations

import pytest

from services.llm.adapters import AdapterRegistry
from services.trainer.chat_gate import chat_gate, judge
from services.trainer.clients.llm import ITEM_FIELDS, LlmAdapters
from services.trainer.scheduler import ROUNDS, RoundScheduler
from styleloop.chat_questions import Question, build_questions
from styleloop.eval_chat import Outcome
from tests.unit.llm.test_chat_service import TOKEN, Chat, branded_items, chat  # noqa: F401
from tests.unit.trainer.test_rounds import FAST, ledger_with_pairs, pairs


def summary(**kw: object) -> dict:
    base = {"questions": 10, "errors": 0, "grounding": 1.0, "precision": 0.9}
    return {**base, **kw}


@pytest.mark.parametrize(
    ("serving", "candidate", "passed", "why"),
    [
        (summary(), summary(), True, "grounding 100%"),
        (summary(), summary(precision=0.95), True, "grounding 100%"),
        (summary(), summary(grounding=0.9), False, "grounding 90.0% < 100%"),
        (summary(), summary(precision=0.8), False, "precision 0.900 -> 0.800"),
        (summary(), summary(precision=None), False, "precision 0.900 -> -"),
        (summary(), summary(errors=1), False, "1 of 10 evaluation answers failed"),
        (summary(precision=None), summary(precision=None), True, "grounding 100%"),
    ],
)
def test_the_gate_needs_full_grounding_and_no_drop_in_precision(
    serving: dict, candidate: dict, passed: bool, why: str
) -> None:
    gate = judge(serving, candidate, 0.0)
    assert gate.passed is passed and why in gate.reason
    assert gate.metrics()["chat_gate_passed"] == float(passed)


def questions() -> list[Question]:
    rows = [{f: getattr(i, f) for f in ("item_id", *ITEM_FIELDS)} for i in branded_items()]
    found = build_questions(rows, "eval", per_kind=2, min_items=1)
    found += build_questions(rows, "train", per_kind=1, min_items=1)  # 36 items: few of each
    assert found, "no question from the test catalog"
    return found[:6]


def due_round(chat: Chat, client: LlmAdapters, asked: list[Question]) -> RoundScheduler:  # noqa: F811
    """A scheduler whose ledger holds a learnable round's pairs, due at once."""
    ledger = ledger_with_pairs(chat.adapters_dir.parent / "state", pairs(12, 0), pairs(8, 1, 100))
    return RoundScheduler(
        ledger, chat.tiny_models, chat.adapters_dir, FAST,
        min_pairs=12, interval_s=3600, check_s=60, llm=client, events=None, questions=asked,
    )  # fmt: skip


class Cheating(LlmAdapters):
    """The real client, except that the candidate's answers cite an item they were not
    given (what constrained decoding prevents: a model forced to try)."""

    candidate = ""

    async def ask(self, question: Question, adapter_id: str, *a: object, **kw: object) -> Outcome:
        out = await super().ask(question, adapter_id)
        if adapter_id == self.candidate:
            out.cited.append("not-retrieved")
        return out


async def test_the_real_llm_answers_with_both_adapters_and_a_grounded_candidate_passes(
    chat: Chat,  # noqa: F811
) -> None:
    client = LlmAdapters(chat.address, 10, TOKEN)
    scheduler = due_round(chat, client, questions())
    result = await scheduler.run_once()
    assert result is not None and result.published, result.reason
    assert result.metrics["chat_gate_passed"] == 1.0
    assert result.metrics["chat_grounding_candidate"] == 1.0
    assert "chat evaluation: grounding 100%" in result.reason
    assert AdapterRegistry(chat.adapters_dir).read_active() == result.adapter_id
    assert chat.service.adapters.active_id() == result.adapter_id  # through SetActiveAdapter
    await client.close()


async def test_a_candidate_that_fails_the_chat_evaluation_is_withdrawn_and_never_serves(
    chat: Chat,  # noqa: F811
) -> None:
    client = Cheating(chat.address, 10, TOKEN)
    scheduler = due_round(chat, client, questions())
    original = scheduler._chat_gate

    async def gate(result):  # type: ignore[no-untyped-def]
        client.candidate = result.adapter_id  # known once the round published it
        return await original(result)

    scheduler._chat_gate = gate  # type: ignore[method-assign]
    kept = ROUNDS.labels("kept")._value.get()
    result = await scheduler.run_once()
    assert result is not None and not result.published and result.adapter_id == ""
    assert "then withdrawn" in result.reason and "grounding" in result.reason
    assert result.metrics["chat_gate_passed"] == 0.0
    metrics = result.metrics
    assert metrics["preference_accuracy_after"] > metrics["preference_accuracy_before"]
    assert AdapterRegistry(chat.adapters_dir).list() == [], "withdrawn from the registry"
    assert AdapterRegistry(chat.adapters_dir).read_active() == ""
    assert chat.service.adapters.active_id() == "", "the base model still serves"
    assert ROUNDS.labels("kept")._value.get() == kept + 1
    await client.close()


async def test_the_gate_asks_every_question_of_each_adapter_and_scores_it(
    chat: Chat,  # noqa: F811
) -> None:
    client = LlmAdapters(chat.address, 10, TOKEN)
    asked = questions()[:3]
    gate = await chat_gate(client.ask, asked, "", "base")
    for side in (gate.serving, gate.candidate):
        assert side["questions"] == 3 and side["errors"] == 0 and side["grounding"] == 1.0
    assert gate.passed
    await client.close()


async def test_without_questions_a_round_serves_unevaluated_and_says_so(
    chat: Chat,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = LlmAdapters(chat.address, 10, TOKEN)
    scheduler = due_round(chat, client, [])
    with caplog.at_level("WARNING"):
        result = await scheduler.run_once()
    assert result is not None and result.published and "chat_gate_passed" not in result.metrics
    assert "no chat evaluation of the candidate (no catalog to ask about)" in caplog.text
    await client.close()
