"""`styleloop simulate`: scripted shoppers with hidden tastes against a running stack.

Each shopper has one taste the stack is never told — never a colour, only one gender, or
a favourite brand — and, round after round, asks the chat fresh questions that leave room
to get it wrong ("show me tshirts" to someone who never wears black). They read the answer
as a shopper would on the web page: every card shown (the items the answer recommends,
that is cites, and the others it found) that does not fit their taste is rejected, every
one that fits is liked, each event naming the answer it came from (``answer_id``),
through ``POST /v1/feedback``. The trainer pairs them with the chat turns into preference
pairs (a liked card against a rejected one of the same answer) and runs its DPO rounds on
them.

Reported per round: the rejection rate (rejected / recommended items: of the items the
answer recommends, the share that does not fit the shopper's taste); the one-pick floor,
the rate a model would reach that cites one card per answer and a fitting one whenever
one is shown (an answer cites at least one card, so one whose cards all miss the taste
is a rejection whatever the model learnt: retrieval, not the model, sets this floor); and
how often an item the shopper had rejected was shown to them again. Between rounds it
waits for the trainer to finish a DPO round (its ``trainer_rounds_total``, from
``--trainer-metrics``).

To measure what the model learnt (issue 14's goal: the rejection rate on fresh questions
falls by ≥ 30% relative to round 0 after 3 rounds), run the stack with retrieval that does
not use the shopper's state (``PERSONALISE=false``: the recommender still records every
rejection and like, and the llm shows the newest ones to the model after the cards, but
search no longer hides rejected items), and with rounds that start after one simulated
round::

    PERSONALISE=false ROUND_MIN_PAIRS=16 make up
    .venv/bin/styleloop simulate --catalog ../shared/data --shoppers 14 --rounds 4

``--no-dpo-wait`` on a stack whose rounds never start (``ROUND_MIN_PAIRS=100000``) is the
control: the same shoppers with their history in the prompt and no training.

The trainer starts a round when enough pairs have arrived, which is while shoppers are
still asking: on two cores a round and the chats then share the CPU (a round cut at
``ROUND_MAX_MINUTES``, 40–80 s a question). ``--train`` measures on a machine like that:
the stack's own rounds are off (``ROUND_MIN_PAIRS=1000000``) and simulate runs each round
itself between question rounds, on the trainer's ledger (every pair so far, its own
held-out split) with the trainer's :func:`~services.trainer.rounds.run_round` (the code of
``styleloop train dpo``: the same held-out gate; published adapters serve through the
registry's ``active.json``; the trainer's chat evaluation of a candidate is not run)::

    PERSONALISE=false ROUND_MIN_PAIRS=1000000 make up
    .venv/bin/styleloop simulate --catalog ../shared/data --shoppers 14 --rounds 4 --train

With the immediate path on (the default stack), "shown again" must stay 0.
Everything is bounded: shoppers, questions, rounds and the wait for each DPO round.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from styleloop.chat_questions import Question, _plural
from styleloop.commands import (
    adapters_dir_argument,
    add_command,
    gateway_argument,
    trainer_state_argument,
)


@dataclass(frozen=True)
class Taste:
    kind: str  # avoid_colour, only_gender, brand
    value: str

    def fits(self, item: Mapping[str, Any]) -> bool:
        if self.kind == "avoid_colour":
            return str(item.get("colour", "")) != self.value
        if self.kind == "only_gender":
            return str(item.get("gender", "")) in (self.value, "Unisex")
        return str(item.get("brand", "")) == self.value

    def __str__(self) -> str:
        return {"avoid_colour": "never {}", "only_gender": "only {}", "brand": "only {}"}[
            self.kind
        ].format(self.value)


@dataclass
class Shopper:
    user_id: str
    taste: Taste
    questions: list[list[str]]  # per round
    rejected: set[str] = field(default_factory=set)


@dataclass
class RoundReport:
    round: int
    questions: int = 0
    recommended: int = 0
    rejected: int = 0
    liked: int = 0
    rejected_shown: int = 0  # every shown card rejected, cited or not
    with_cards: int = 0  # answers that showed cards
    nothing_fits: int = 0  # of those, the ones none of whose cards fits the shopper's taste
    shown_again: int = 0  # items the shopper had rejected, shown to them again
    adapters: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)  # the round trained after it

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.recommended if self.recommended else 0.0

    @property
    def one_pick_floor(self) -> float:
        """The rejection rate of a model that cites one card per answer, a fitting one
        whenever one is shown: an answer cites at least one card (grounding), so an answer
        none of whose cards fits is a rejection whatever the model learnt."""
        return self.nothing_fits / self.with_cards if self.with_cards else 0.0


def shoppers_for(
    rows: Sequence[Mapping[str, Any]], count: int, rounds: int, per_round: int, seed: int
) -> list[Shopper]:
    """Tastes the catalog can both satisfy and violate, with questions (different every
    round) whose answers can go either way."""
    rng = random.Random(seed)
    colours = Counter(str(r.get("colour", "")) for r in rows if r.get("colour"))
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("article_type"):
            by_type[str(row["article_type"])].append(row)
    tastes: list[Taste] = []
    for colour, _ in colours.most_common(3):
        tastes.append(Taste("avoid_colour", colour))
    tastes += [Taste("only_gender", "Women"), Taste("only_gender", "Men")]
    brands = Counter(str(r.get("brand", "")) for r in rows if r.get("brand"))
    for brand, _ in brands.most_common(2):
        tastes.append(Taste("brand", brand))
    shoppers = []
    for n in range(count):
        taste = tastes[n % len(tastes)]
        # Types with items on both sides of the taste (at least 3 each), asked plainly.
        both = [
            t
            for t, items in by_type.items()
            if sum(taste.fits(i) for i in items) >= 3 and sum(not taste.fits(i) for i in items) >= 3
        ]
        rng.shuffle(both)
        wanted = rounds * per_round
        picks = (both * (wanted // max(1, len(both)) + 1))[:wanted] if both else []
        questions = [
            [f"show me {_plural(t)}" for t in picks[r * per_round : (r + 1) * per_round]]
            for r in range(rounds)
        ]
        shoppers.append(Shopper(f"sim-{seed}-{n}-{taste.kind}", taste, questions))
    return shoppers


def judge(
    shopper: Shopper,
    cited: Sequence[str],
    retrieved: Sequence[str],
    by_id: Mapping[str, Mapping[str, Any]],
    report: RoundReport,
) -> list[tuple[str, str]]:
    """The shopper's feedback on one answer, counted into ``report``: every card shown
    (cited or "also found", as on the web page) is liked when it fits their taste and
    rejected when it does not; the rejection rate counts only the cited ones."""
    fits = {i: shopper.taste.fits(by_id.get(i, {})) for i in [*cited, *retrieved]}
    for item_id in dict.fromkeys(cited):
        report.recommended += 1
        report.rejected += not fits[item_id]
    if fits:
        report.with_cards += 1
        report.nothing_fits += not any(fits.values())
    events = []
    for item_id, fit in fits.items():
        if fit:
            events.append((item_id, "like"))
            report.liked += 1
        else:
            events.append((item_id, "reject"))
            report.rejected_shown += 1
            shopper.rejected.add(item_id)
    return events


def metric_sum(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry every one of ``labels``."""
    from styleloop.runtime.metrics import scrape

    return sum(s.value for s in scrape(metrics_url, name) if labels.items() <= s.labels.items())


def rounds_done(metrics_url: str) -> float:
    """trainer_rounds_total summed over outcomes (published, kept, failed)."""
    return metric_sum(metrics_url, "trainer_rounds_total")


def feedback_consumed(metrics_url: str) -> float:
    """Feedback events the trainer has handled, whatever their outcome."""
    return metric_sum(metrics_url, "trainer_events_consumed_total", topic="styleloop.feedback.v1")


def wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            sys.stderr.write(f"styleloop simulate: {what} within {timeout_s:.0f} s; going on\n")
            return
        time.sleep(1)


def run(
    client: Any,
    rows: Sequence[Mapping[str, Any]],
    shoppers: Sequence[Shopper],
    rounds: int,
    *,
    trainer_metrics: str,
    round_timeout_s: float,
    max_new_tokens: int,
    progress: bool,
    max_items: int = 0,
    dpo: bool = True,
    on_round: Any = None,
    train_round: Any = None,
) -> list[RoundReport]:
    from tqdm import tqdm

    from styleloop.eval_chat import ask

    by_id = {str(r["item_id"]): r for r in rows}
    reports = []
    for number in range(rounds):
        report = RoundReport(number)
        started = time.monotonic()
        before = rounds_done(trainer_metrics) if trainer_metrics else 0.0
        consumed = feedback_consumed(trainer_metrics) if trainer_metrics else 0.0
        sent = 0
        asked = [(s, q) for s in shoppers for q in s.questions[number]]
        for shopper, text in tqdm(asked, desc=f"round {number}", disable=not progress, unit="q"):
            outcome = ask(
                client, Question(text, "simulate"), shopper.user_id, max_new_tokens, max_items
            )
            report.questions += 1
            if outcome.error:
                report.errors += 1
                continue
            report.adapters[outcome.adapter_id or "base"] = (
                report.adapters.get(outcome.adapter_id or "base", 0) + 1
            )
            report.shown_again += sum(1 for i in outcome.retrieved if i in shopper.rejected)
            events = judge(shopper, outcome.cited, outcome.retrieved, by_id, report)
            if events and outcome.answer_id:
                batch = {
                    "events": [
                        {
                            "user_id": shopper.user_id,
                            "item_id": item_id,
                            "kind": kind,
                            "context": {
                                "source": "chat",
                                "query": text,
                                "recommended_item_ids": outcome.retrieved,
                                "answer_id": outcome.answer_id,
                                "adapter_id": outcome.adapter_id,
                            },
                        }
                        for item_id, kind in events
                    ]
                }
                client.post("/v1/feedback", json=batch).raise_for_status()
                sent += len(events)
                if trainer_metrics:
                    # A shopper asks again only once their judgements took effect (the
                    # trainer consumed them): "shown again" then counts rejected items the
                    # stack returned after applying the rejection, not a race with its
                    # event -> effect latency (the gateway's own apply may be off).
                    wait(
                        lambda target=consumed + sent: feedback_consumed(trainer_metrics) >= target,
                        round_timeout_s,
                        f"the trainer did not consume {shopper.user_id}'s judgements",
                    )
        report.seconds = round(time.monotonic() - started, 1)
        reports.append(report)
        if on_round is not None:
            on_round(reports)
        if number < rounds - 1 and trainer_metrics:
            # The trainer has taken every event of this round (waited for after each
            # answer's judgements, above); now the DPO round, if any.
            if train_round is not None:
                report.training = train_round(number)
                if on_round is not None:
                    on_round(reports)
            elif dpo:
                wait(
                    lambda done=before: rounds_done(trainer_metrics) > done,
                    round_timeout_s,
                    f"no DPO round finished after round {number}",
                )
    return reports


def round_trainer(args: argparse.Namespace) -> Any:
    """``--train``: one DPO round on every pair the trainer's ledger holds, from the
    serving adapter, with the trainer's own code; published ones serve."""

    def train(number: int) -> dict[str, Any]:
        from services.llm.adapters import AdapterRegistry
        from services.trainer.ledger import Ledger
        from services.trainer.rounds import RoundSettings, run_round

        ledger = Ledger(args.trainer_state_dir)
        try:
            train_pairs = [p.as_json() for p in ledger.pairs("train")]
            held = [p.as_json() for p in ledger.pairs("eval")]
        finally:
            ledger.close()
        parent = AdapterRegistry(args.adapters_dir).read_active()
        started = time.monotonic()
        result = run_round(
            args.models_dir,
            args.adapters_dir,
            train_pairs,
            held,
            RoundSettings(
                steps=args.steps,
                learning_rate=args.learning_rate,
                max_length=args.max_length,
                max_minutes=60.0,
                seed=args.seed + number,
            ),
            parent=parent,
            progress=not args.no_progress,
            activate=True,
        )
        if result.published:
            time.sleep(args.adapter_poll_s + 1)  # the llm reads active.json again
        return {
            "train_pairs": len(train_pairs),
            "held_out_pairs": len(held),
            "parent": parent,
            "published": result.published,
            "adapter_id": result.adapter_id,
            "reason": result.reason,
            "metrics": result.metrics,
            "minutes": round((time.monotonic() - started) / 60, 2),
        }

    return train


def show(reports: Sequence[RoundReport], shoppers: Sequence[Shopper], path: Path | None) -> None:
    """The table so far (and the JSON file)."""
    first = reports[0].rejection_rate
    out = sys.stdout
    out.write(
        "round  questions  recommended  rejected  rate    vs round 0  one-pick floor  "
        "shown again  adapter\n"
    )
    for r in reports:
        change = f"{(r.rejection_rate - first) / first:+.0%}" if first else "-"
        adapter = max(r.adapters, key=lambda a: r.adapters[a]) if r.adapters else "-"
        out.write(
            f"{r.round:5}  {r.questions:9}  {r.recommended:11}  {r.rejected:8}  "
            f"{r.rejection_rate:5.1%}  {change:>10}  {r.one_pick_floor:14.1%}  "
            f"{r.shown_again:11}  {adapter}\n"
        )
    for r in reports:
        if r.training:
            t = r.training
            out.write(
                f"after round {r.round}: {t['train_pairs']} / {t['held_out_pairs']} pairs, "
                f"{'published' if t['published'] else 'kept'} ({t['reason']}), "
                f"{t['minutes']:.1f} min\n"
            )
    out.write("tastes: " + ", ".join(sorted({str(s.taste) for s in shoppers})) + "\n")
    out.flush()
    if path is not None:
        path.write_text(
            json.dumps(
                {
                    "rounds": [
                        {
                            **asdict(r),
                            "rejection_rate": r.rejection_rate,
                            "one_pick_floor": r.one_pick_floor,
                        }
                        for r in reports
                    ],
                    "shoppers": [{"user_id": s.user_id, "taste": str(s.taste)} for s in shoppers],
                },
                indent=2,
            )
        )


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "simulate",
        __doc__,
        help="scripted shoppers with hidden tastes chat, reject and like against a stack",
    )
    parser.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    gateway_argument(parser)
    parser.add_argument(
        "--trainer-metrics",
        default="http://127.0.0.1:50156/metrics",
        help="the trainer's /metrics, to wait for its DPO rounds ('' waits for none)",
    )
    parser.add_argument("--shoppers", type=int, default=7, help="scripted shoppers (7)")
    parser.add_argument("--questions", type=int, default=3, help="per shopper per round (3)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of questions (4)")
    parser.add_argument("--round-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--no-dpo-wait",
        action="store_true",
        help="between rounds wait only for the trainer to consume the events, not to train",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="run each DPO round here, between question rounds, on the trainer's ledger "
        "(the stack's own rounds off: ROUND_MIN_PAIRS=1000000)",
    )
    trainer_state_argument(parser, "--trainer-state-dir")
    adapters_dir_argument(parser)
    parser.add_argument("--models-dir", type=Path, default=Path(".models/offline"))
    parser.add_argument("--steps", type=int, default=16, help="with --train: DPO steps (16)")
    parser.add_argument(
        "--adapter-poll-s",
        type=float,
        default=5.0,
        help="with --train: the llm's ADAPTER_POLL_S, waited after a round publishes",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-4,
        help="with --train: the rounds' learning rate (1e-4)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="with --train: tokens per pair; longer pairs sit a round out "
        "(512: 5 cards and history take up to ~410 tokens, 10 cards ~540)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--max-items",
        type=int,
        default=0,
        help="cards each chat answer grounds on, 1..10 (default: the chat's own, 5); "
        "more cards lower the one-pick floor",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--no-progress", action="store_true")

    def main(args: argparse.Namespace) -> int:
        import httpx

        from styleloop.catalog import CatalogError, configured_catalog, read_catalog

        for name in ("shoppers", "questions", "rounds"):
            if not 1 <= getattr(args, name) <= 100:
                sys.stderr.write(f"styleloop simulate: --{name} must be 1..100\n")
                return 2
        catalog = configured_catalog(args.catalog)
        if catalog is None:
            sys.stderr.write("styleloop simulate: give --catalog or set STYLELOOP_DATA_DIR\n")
            return 2
        try:
            rows = [r.item for r in read_catalog(catalog).rows]
        except CatalogError as exc:
            sys.stderr.write(f"styleloop simulate: {exc}\n")
            return 2
        if args.steps < 1:
            sys.stderr.write("styleloop simulate: --steps must be >= 1\n")
            return 2
        if not 0 <= args.max_items <= 10:
            sys.stderr.write("styleloop simulate: --max-items must be 1..10 (0: the chat's own)\n")
            return 2
        if not 0 < args.learning_rate < 1 or args.max_length < 64:
            sys.stderr.write(
                "styleloop simulate: --learning-rate must be in (0, 1), --max-length >= 64\n"
            )
            return 2
        if args.train and not (args.trainer_state_dir / "trainer.sqlite3").is_file():
            sys.stderr.write(
                f"styleloop simulate: --train: no trainer ledger in {args.trainer_state_dir}\n"
            )
            return 2
        shoppers = shoppers_for(rows, args.shoppers, args.rounds, args.questions, args.seed)
        with httpx.Client(base_url=args.gateway, timeout=300) as client:
            try:
                client.get("/healthz").raise_for_status()
                if args.trainer_metrics:
                    rounds_done(args.trainer_metrics)
            except (httpx.HTTPError, OSError) as exc:
                sys.stderr.write(f"styleloop simulate: the stack is not reachable ({exc})\n")
                return 2
            reports = run(
                client,
                rows,
                shoppers,
                args.rounds,
                trainer_metrics=args.trainer_metrics,
                round_timeout_s=args.round_timeout_s,
                max_new_tokens=args.max_new_tokens,
                progress=not args.no_progress,
                max_items=args.max_items,
                dpo=not args.no_dpo_wait,
                train_round=round_trainer(args) if args.train else None,
                # Each round's figures as soon as it ends (a long run can be stopped).
                on_round=lambda done: show(done, shoppers, args.json),
            )
        return 1 if any(r.errors for r in reports) else 0

    parser.set_defaults(func=main)
