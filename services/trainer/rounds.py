"""One DPO round: TRL's ``DPOTrainer`` on a LoRA adapter, from the serving adapter.

The policy starts as the serving adapter (or a fresh LoRA on the base model when none
serves); given a ``PeftModel``, TRL keeps a frozen copy of that adapter (``"ref"``) as the
reference, so each round moves away from what serves now, not from the base model. The
prompt of every pair is rendered exactly as the llm serves it
(:func:`services.llm.backends.local.render_prompt`: the model's chat template, with the
generation prompt), and each answer is followed by the end-of-text token.

CPU-friendly by default: float32 (bf16 autocast on CPU trains slower here and loses
precision), no gradient checkpointing (TRL turns it on by default; it only saves memory),
``max_length`` 512 (TRL's default is 1024; a served 10-card prompt with the shopper's
history is up to ~400 tokens; a pair longer than that is left out of training, since TRL
would cut its answer off or drop it, and a round none of whose pairs fits says so), small
rank, bounded steps and minutes.

**Preference accuracy** (the gate): the share of held-out pairs (at most
``max_held_out`` of them, a fixed sample by pair id) for which the model gives
the chosen answer a higher log-likelihood than the rejected one, given the prompt — the
sign of the DPO reward margin with the reference factored out, so that the serving adapter
and the candidate are measured the same way. TRL's own ``rewards/accuracies`` and
``rewards/margins`` (against the reference, during training) are logged and kept in the
adapter's metrics. A round publishes only when held-out preference accuracy rises by at
least ``min_gain`` — or, once accuracy is at its ceiling (within ``min_gain`` of 1), when
it does not fall and the mean log-likelihood margin rises by ``min_margin_gain``
(:func:`beats_serving`); otherwise the serving adapter stays, and the reason is returned.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class RoundSettings:
    steps: int = 8
    batch_size: int = 2
    rank: int = 8
    learning_rate: float = 1e-4
    beta: float = 0.1
    max_length: int = 512
    max_minutes: float = 20.0
    min_gain: float = 0.05
    min_margin_gain: float = 1.0
    max_held_out: int = 40
    seed: int = 0


@dataclass
class RoundResult:
    round_id: str
    parent: str  # the adapter the round started from ("" = the base model)
    published: bool
    adapter_id: str  # "" unless published
    reason: str  # why it was or was not published
    metrics: dict[str, float] = field(default_factory=dict)
    pair_ids: list[str] = field(default_factory=list)


def messages_of(pair: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(m["role"]), str(m["content"])) for m in pair["prompt"]]


def _answer_logprob(model: Any, tokenizer: Any, prompt: str, answer: str, max_length: int) -> float:
    """log p(answer + end | prompt), summed over the answer's tokens."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[-max_length:]
    start = max(1, len(ids) - len(answer_ids))
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    target = torch.tensor(ids[1:])
    picked = logps.gather(1, target[:, None])[:, 0]
    return float(picked[start - 1 :].sum())


def preference_accuracy(
    model: Any, tokenizer: Any, pairs: Sequence[Mapping[str, Any]], max_length: int
) -> tuple[float, float]:
    """(share of pairs whose chosen answer is more likely, mean log-likelihood margin)."""
    from services.llm.backends.local import render_prompt

    if not pairs:
        return 0.0, 0.0
    was_training = model.training
    model.eval()
    wins, margins = 0, []
    for pair in pairs:
        prompt = render_prompt(tokenizer, messages_of(pair))
        chosen = _answer_logprob(model, tokenizer, prompt, pair["chosen"], max_length)
        rejected = _answer_logprob(model, tokenizer, prompt, pair["rejected"], max_length)
        wins += chosen > rejected
        margins.append(chosen - rejected)
    if was_training:
        model.train()
    return wins / len(pairs), sum(margins) / len(margins)


def held_out_sample(pairs: Sequence[Mapping[str, Any]], most: int) -> list[Mapping[str, Any]]:
    """At most ``most`` of the held-out pairs, the same ones for the same pair ids whatever
    their order (a digest of each pair's id decides): each pair costs two forward passes
    before and two after training, ~1 s each for the 0.5B model on 2 cores."""
    if len(pairs) <= most:
        return list(pairs)

    def key(pair: Mapping[str, Any]) -> bytes:
        text = str(pair.get("pair_id") or (pair["prompt"], pair["chosen"], pair["rejected"]))
        return hashlib.blake2b(text.encode(), digest_size=8).digest()

    return sorted(pairs, key=key)[:most]


def run_round(
    models_dir: Path,
    adapters_dir: Path,
    train: Sequence[Mapping[str, Any]],
    held_out: Sequence[Mapping[str, Any]],
    settings: RoundSettings,
    *,
    parent: str = "",
    progress: bool = False,
    on_log: Callable[[Mapping[str, float]], None] | None = None,
    activate: bool = False,
    cancelled: threading.Event | None = None,
) -> RoundResult:
    """Train, measure before and after on ``held_out``, publish when better."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

    from services.llm.adapters import AdapterInfo, AdapterRegistry, publish
    from styleloop.models.manifest import load_manifest

    round_id = f"dpo-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{random.randrange(16**4):04x}"
    pair_ids = [str(p.get("pair_id", "")) for p in train]
    if not train or not held_out:
        return RoundResult(
            round_id,
            parent,
            False,
            "",
            f"{len(train)} training and {len(held_out)} held-out pairs: a round needs both",
            pair_ids=pair_ids,
        )
    available = len(held_out)
    held_out = held_out_sample(held_out, settings.max_held_out)
    manifest = load_manifest(models_dir)
    if manifest is None or manifest.llm is None:
        raise FileNotFoundError(f"no LLM in {models_dir}; run `styleloop models prepare`")
    torch.manual_seed(settings.seed)
    llm_dir = models_dir / manifest.llm.path
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, too_long = fitting_rows(tokenizer, train, settings.max_length)
    if not rows:
        return RoundResult(
            round_id,
            parent,
            False,
            "",
            f"none of the {len(train)} training pairs fits in {settings.max_length} tokens "
            f"(prompt and answer; the shortest needs {min(too_long)}): raise ROUND_MAX_LENGTH",
            pair_ids=pair_ids,
        )
    if too_long:
        log.warning(
            "%d of %d training pairs are longer than max_length and sit this round out",
            len(too_long),
            len(train),
            extra={"max_length": settings.max_length, "longest": max(too_long)},
        )
    base: Any = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    registry = AdapterRegistry(adapters_dir)
    if parent:
        model: Any = PeftModel.from_pretrained(base, registry.get(parent).path, is_trainable=True)
    else:
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=2 * settings.rank,
            lora_dropout=0.0,
            target_modules=TARGET_MODULES,
        )
        model = get_peft_model(base, config)
    started = time.monotonic()
    before, before_margin = preference_accuracy(model, tokenizer, held_out, settings.max_length)

    dataset = Dataset.from_list(rows)
    logged: list[dict[str, float]] = []

    class Bounded(TrainerCallback):  # type: ignore[misc]
        # The signatures are transformers' TrainerCallback's.
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:  # noqa: ARG002
            late = time.monotonic() - started > settings.max_minutes * 60
            if late or (cancelled is not None and cancelled.is_set()):
                control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:  # noqa: ARG002, E501
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if numbers:
                logged.append(numbers)
                if on_log is not None:
                    on_log(numbers)
            return control

    with tempfile.TemporaryDirectory() as work:
        args = DPOConfig(
            output_dir=work,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="constant",
            beta=settings.beta,
            max_length=settings.max_length,
            gradient_checkpointing=False,
            bf16=False,
            fp16=False,
            use_cpu=True,
            report_to=[],
            logging_steps=1,
            save_strategy="no",
            disable_tqdm=not progress,
            seed=settings.seed,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Bounded()],
        )
        if not progress:  # TRL prints every log line otherwise; on_log keeps them
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        trainer.train()
        if cancelled is not None and cancelled.is_set():
            return RoundResult(round_id, parent, False, "", "stopped before the round ended")
        model = trainer.model
        if "default" in getattr(model, "peft_config", {}):
            model.set_adapter("default")
        after, after_margin = preference_accuracy(model, tokenizer, held_out, settings.max_length)
        steps = float(trainer.state.global_step)
        train_logs = [r for r in logged if "rewards/accuracies" in r]
        metrics = {
            "preference_accuracy_before": round(before, 4),
            "preference_accuracy_after": round(after, 4),
            "loglik_margin_before": round(before_margin, 4),
            "loglik_margin_after": round(after_margin, 4),
            "train_pairs": float(len(rows)),
            "train_pairs_too_long": float(len(too_long)),
            "held_out_pairs": float(len(held_out)),
            "held_out_pairs_available": float(available),
            "steps": steps,
            "minutes": round((time.monotonic() - started) / 60, 2),
            # What the round ran with, kept with the adapter and on its model event.
            "learning_rate": settings.learning_rate,
            "beta": settings.beta,
            "batch_size": float(settings.batch_size),
            "max_length": float(settings.max_length),
        }
        if train_logs:
            metrics["rewards_accuracies_last"] = round(train_logs[-1]["rewards/accuracies"], 4)
            metrics["rewards_margins_last"] = round(train_logs[-1].get("rewards/margins", 0.0), 4)
        if not all(math.isfinite(v) for v in metrics.values()):
            return RoundResult(round_id, parent, False, "", "training diverged", metrics, pair_ids)
        better, why = beats_serving(before, after, before_margin, after_margin, settings)
        if not better:
            reason = f"{why}: the serving adapter stays"
            return RoundResult(round_id, parent, False, "", reason, metrics, pair_ids)
        saved = Path(work) / "adapter"
        model.save_pretrained(saved, selected_adapters=["default"])
        info = publish(
            adapters_dir,
            saved,
            AdapterInfo(
                round_id,
                manifest.llm.model_id,
                manifest.llm.model_version,
                parent=parent,
                metrics=metrics,
            ),
            activate=activate,
        )
    reason = f"{why}: published"
    return RoundResult(round_id, parent, True, info.adapter_id, reason, metrics, pair_ids)


def fitting_rows(
    tokenizer: Any, pairs: Sequence[Mapping[str, Any]], max_length: int
) -> tuple[list[dict[str, str]], list[int]]:
    """TRL's rows (prompt rendered as served, chosen, rejected) of the pairs whose prompt
    and longer answer, with its end-of-text token, fit in ``max_length`` tokens; and the
    lengths of those that do not."""
    from services.llm.backends.local import render_prompt

    rows, too_long = [], []
    for pair in pairs:
        prompt = render_prompt(tokenizer, messages_of(pair))
        chosen, rejected = str(pair["chosen"]), str(pair["rejected"])
        needed = (
            len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            + 1
            + max(
                len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in (chosen, rejected)
            )
        )
        if needed > max_length:
            too_long.append(needed)
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows, too_long


def beats_serving(
    before: float, after: float, margin_before: float, margin_after: float, s: RoundSettings
) -> tuple[bool, str]:
    """The publish gate on the held-out pairs: accuracy up by ``min_gain``; or, where the
    serving adapter is already within ``min_gain`` of every pair right (accuracy cannot
    rise by that much any more), accuracy not lower and the mean log-likelihood margin up
    by ``min_margin_gain`` (the candidate prefers the chosen answers more firmly)."""
    said = f"held-out preference accuracy {before:.3f} -> {after:.3f}"
    gain = after - before
    if gain >= s.min_gain:
        return True, said
    margin = margin_after - margin_before
    ceiling = before > 1.0 - s.min_gain
    if ceiling and after >= before and margin >= s.min_margin_gain:
        return (
            True,
            f"{said} (at the ceiling), mean margin {margin_before:+.2f} -> {margin_after:+.2f}",
        )
    if ceiling:
        return False, (
            f"{said} (at the ceiling) and mean margin {margin_before:+.2f} -> "
            f"{margin_after:+.2f} (gain {margin:+.2f} < {s.min_margin_gain:.2f})"
        )
    return False, f"{said} (gain {gain:+.3f} < {s.min_gain:.3f})"
