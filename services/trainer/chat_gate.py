"""The chat evaluation a round's adapter passes before it serves.

The held-out pairs say whether the candidate prefers what shoppers preferred; they do not
say whether it still answers well. So before a published candidate serves, the llm service
answers the chat evaluation's questions (:mod:`styleloop.chat_questions`, the eval split of
the catalog's real attribute combinations) once with the serving adapter and once with the
candidate (``ChatRequest.adapter_id``: the candidate answers those chats only, shoppers
keep the serving one), scored as ``styleloop eval chat`` scores them. The candidate passes
when every citation is a retrieved item (grounding 100%), no answer failed, and the
constraint precision of what it cites is not below the serving adapter's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.llm.adapters import BASE_MODEL
from styleloop.chat_questions import Question
from styleloop.eval_chat import Outcome, summarise

log = logging.getLogger(__name__)

# One question answered by one adapter (BASE_MODEL: the base model), scored.
Ask = Callable[[Question, str], Awaitable[Outcome]]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    serving: dict[str, Any]
    candidate: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        """The figures kept with the round (the model event, the adapter's metrics)."""
        out: dict[str, float] = {"chat_gate_passed": float(self.passed)}
        for who, summary in (("serving", self.serving), ("candidate", self.candidate)):
            for key in ("grounding", "precision", "idk_accuracy"):
                if summary.get(key) is not None:
                    out[f"chat_{key}_{who}"] = round(float(summary[key]), 4)
        return out


def judge(serving: dict[str, Any], candidate: dict[str, Any], tolerance: float) -> GateResult:
    """Whether ``candidate`` (summaries from :func:`styleloop.eval_chat.summarise`) may serve."""
    if candidate["errors"]:
        why = f"{candidate['errors']} of {candidate['questions']} evaluation answers failed"
        return GateResult(False, why, serving, candidate)
    grounding = candidate["grounding"]
    if grounding is not None and grounding < 1.0:
        why = f"grounding {grounding:.1%} < 100%: an answer cited an item it was not given"
        return GateResult(False, why, serving, candidate)
    before, after = serving["precision"], candidate["precision"]
    if before is not None and (after is None or after < before - tolerance):
        shown = "-" if after is None else f"{after:.3f}"
        why = f"constraint precision {before:.3f} -> {shown}: it dropped"
        return GateResult(False, why, serving, candidate)
    shown = "-" if after is None else f"{after:.3f}"
    why = f"chat evaluation: grounding 100%, precision {before} -> {shown}"
    return GateResult(True, why, serving, candidate)


async def chat_gate(
    ask: Ask,
    questions: Sequence[Question],
    serving: str,
    candidate: str,
    tolerance: float = 0.0,
) -> GateResult:
    """Ask every question with both adapters ("" for ``serving``: the base model)."""
    results = {}
    for who, adapter in (("serving", serving or BASE_MODEL), ("candidate", candidate)):
        results[who] = summarise([await ask(q, adapter) for q in questions])
    gate = judge(results["serving"], results["candidate"], tolerance)
    log.info(
        "chat evaluation of the candidate: %s",
        gate.reason,
        extra={"candidate": candidate, "serving": serving, "metrics": gate.metrics()},
    )
    return gate
