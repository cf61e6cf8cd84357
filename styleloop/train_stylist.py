"""`styleloop train stylist`: a first LoRA adapter that makes the served LLM a stylist.

Supervised fine-tuning (PEFT LoRA on the attention projections) on conversations built
from the catalog itself: shopper questions from real attribute combinations
(:mod:`styleloop.chat_questions`, train split), the numbered cards retrieval gives for
them (items that meet every constraint, best first, as the filtered retrieval returns
them) in exactly the serving prompt (:func:`services.llm.cards.build_messages` and the
model's chat template), and a short answer that names and cites the cards that match.
Only the answer's tokens are learned.

Measured before and after on held-out questions (the eval split: no combination of it
is trained on): the mean loss of the reference answers. The adapter is published to the
registry (``ADAPTERS_DIR``) with its base model, parent, metrics and creation time, and
made active unless ``--no-activate``; a running llm service picks it up by itself.
Time is bounded by ``--steps`` and ``--max-minutes``; a progress bar shows the loss.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from styleloop.chat_questions import Question, build_questions
from styleloop.commands import adapters_dir_argument, add_command

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def answer_for(question: Question, cards: Sequence[Any], rng: random.Random) -> str:
    """A short answer that names and cites the first one or two cards."""
    from services.llm.cards import clean

    cited = list(range(1, min(len(cards), rng.choice((1, 2, 2))) + 1))
    names = [f"the {clean(cards[n - 1].title)} [{n}]" for n in cited]
    picks = names[0] if len(names) == 1 else f"{names[0]} or {names[1]}"
    c = {k: v[0] for k, v in question.constraints.items()}
    openings = {
        "brand_season": f"From {c.get('brand', '')}'s {c.get('season', '')} "
        f"{c.get('year', '')} collection, try {picks}.",
        "brand_type_gender": f"For {c.get('gender', '').lower()}, {c.get('brand', '')} "
        f"has {picks}.",
        "colour_type": f"In {c.get('colour', '').lower()}, I would pick {picks}.",
        "usage_type_gender": f"For {c.get('usage', '').lower()} wear, try {picks}.",
    }
    return openings.get(question.kind, f"Try {picks}.")


def conversations(
    rows: Sequence[Mapping[str, Any]], split: str, per_kind: int, seed: int, max_cards: int
) -> list[tuple[Any, str]]:
    """(prompt messages, answer) pairs for the answerable questions of ``split``."""
    from services.llm.cards import CardItem, build_messages

    by_id = {str(r["item_id"]): r for r in rows}
    rng = random.Random(seed)
    out: list[tuple[Any, str]] = []
    for question in build_questions(rows, split, per_kind=per_kind, seed=seed):  # type: ignore[arg-type]
        if not question.answerable or not question.matching:
            continue
        ids = rng.sample(list(question.matching), min(max_cards, len(question.matching)))
        cards = [CardItem.from_mapping(by_id[i]) for i in ids]
        out.append((build_messages(question.text, cards), answer_for(question, cards, rng)))
    return out


def encode(tokenizer: Any, messages: Sequence[tuple[str, str]], answer: str, max_length: int):  # type: ignore[no-untyped-def]
    """Token ids and labels: the prompt as served (masked), then the answer and its end."""
    from services.llm.backends.local import render_prompt

    prompt = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt + target)[-max_length:]
    labels = ([-100] * len(prompt) + target)[-max_length:]
    return ids, labels


def batches(examples: list[tuple[list[int], list[int]]], size: int, pad: int, rng: random.Random):  # type: ignore[no-untyped-def]
    import torch

    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1, size):
            chunk = [examples[i] for i in order[start : start + size]]
            longest = max(len(ids) for ids, _ in chunk)
            ids = torch.full((size, longest), pad)
            labels = torch.full((size, longest), -100)
            mask = torch.zeros((size, longest), dtype=torch.long)
            for row, (i, label) in enumerate(chunk):
                ids[row, : len(i)] = torch.tensor(i)
                labels[row, : len(label)] = torch.tensor(label)
                mask[row, : len(i)] = 1
            yield ids, labels, mask


def held_out_loss(model: Any, examples: list[tuple[list[int], list[int]]]) -> float:
    """Mean loss per answer token of the held-out reference answers."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for ids, labels in examples:
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            tokens = sum(1 for t in labels[1:] if t != -100)
            total += float(out.loss) * tokens
            count += tokens
    model.train()
    return total / max(1, count)


def run(
    catalog: Path,
    models_dir: Path,
    adapters_dir: Path,
    *,
    steps: int,
    batch_size: int,
    rank: int,
    learning_rate: float,
    max_length: int,
    max_minutes: float,
    seed: int,
    activate: bool,
    progress: bool,
    per_kind: int = 60,
    eval_examples: int = 24,
) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.adapters import AdapterInfo, publish
    from styleloop.catalog import read_catalog
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(models_dir)
    if manifest is None or manifest.llm is None:
        raise SystemExit(f"no LLM in {models_dir}; run `styleloop models prepare`")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    rows = [r.item for r in read_catalog(catalog).rows]
    llm_dir = models_dir / manifest.llm.path
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train = [
        encode(tokenizer, m, a, max_length)
        for m, a in conversations(rows, "train", per_kind, seed, 5)
    ]
    held = [
        encode(tokenizer, m, a, max_length)
        for m, a in conversations(rows, "eval", per_kind, seed, 5)
    ]
    held = held[:eval_examples]
    if len(train) < batch_size:
        raise SystemExit(f"only {len(train)} training conversations in {catalog}")
    model: Any = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    started = time.monotonic()
    before = held_out_loss(model, held)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=TARGET_MODULES
    )
    model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=learning_rate
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 3) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses: list[float] = []
    data = batches(train, batch_size, pad, rng)
    bar = tqdm(range(steps), desc="train stylist", unit="step", disable=not progress)
    done = 0
    for _ in bar:
        ids, labels, mask = next(data)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        done += 1
        bar.set_postfix(loss=f"{sum(losses[-5:]) / len(losses[-5:]):.3f}")
        if time.monotonic() - started > max_minutes * 60:
            break
    bar.close()
    after = held_out_loss(model, held)
    minutes = (time.monotonic() - started) / 60
    adapter_id = f"stylist-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    metrics = {
        "heldout_answer_loss_before": round(before, 4),
        "heldout_answer_loss_after": round(after, 4),
        "train_steps": float(done),
        "train_conversations": float(len(train)),
        "train_minutes": round(minutes, 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        info = publish(
            adapters_dir,
            Path(tmp),
            AdapterInfo(
                adapter_id,
                manifest.llm.model_id,
                manifest.llm.model_version,
                parent="",
                metrics=metrics,
            ),
            activate=activate,
        )
    return {"adapter_id": info.adapter_id, "path": str(info.path), **metrics}


def register(commands: Any) -> None:
    """``styleloop train stylist``: added to the train group by :mod:`styleloop.cli`."""
    parser = add_command(
        commands,
        "stylist",
        __doc__,
        help="a LoRA adapter (SFT) that answers from the cards and cites them",
    )
    parser.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    parser.add_argument("--models-dir", type=Path, default=Path(".models/offline"))
    adapters_dir_argument(parser)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps (30)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (8)")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=384, help="tokens per example")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="stop by then (30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-activate", action="store_true", help="publish, do not serve")
    parser.add_argument("--no-progress", action="store_true")

    def main(args: argparse.Namespace) -> int:
        from styleloop.catalog import configured_catalog

        catalog = configured_catalog(args.catalog)
        if catalog is None:
            sys.stderr.write("styleloop train stylist: give --catalog or set STYLELOOP_DATA_DIR\n")
            return 2
        for name in ("steps", "batch_size", "rank", "max_length"):
            if getattr(args, name) < 1:
                sys.stderr.write(
                    f"styleloop train stylist: --{name.replace('_', '-')} must be >= 1\n"
                )
                return 2
        result = run(
            catalog,
            args.models_dir,
            args.adapters_dir,
            steps=args.steps,
            batch_size=args.batch_size,
            rank=args.rank,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            max_minutes=args.max_minutes,
            seed=args.seed,
            activate=not args.no_activate,
            progress=not args.no_progress,
        )
        for key, value in result.items():
            sys.stdout.write(f"{key}: {value}\n")
        return 0

    parser.set_defaults(func=main)
