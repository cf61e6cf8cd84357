"""`styleloop eval chat`: grounded chat measured through the gateway, as a shopper meets it.

Questions come from the catalog's real attribute combinations (the eval split of
:mod:`styleloop.chat_questions`) plus requests for what it lacks. Each is asked through
``POST /v1/chat`` of a running stack; the answer's server-sent events give what was
retrieved, cited, and when. Reported:

- grounding rate: answers whose every citation is a retrieved item (goal 100%);
- constraint precision: the share of cited items that meet every constraint the question
  asked (brand, season, year, type, gender, colour, usage; goal >= 0.9);
- "I don't know" accuracy: answers that decline (``no_items``) exactly when the catalog
  cannot serve the question (goal >= 0.9);
- named citations: the share of ``[n]`` written right after the cited item's title (an
  answer that names what it recommends, rather than copying cards or citing bare numbers);
- copied cards: the share of citing answers that reproduce card lines instead of
  answering ("; Casual; Fall 2011");
- time to first token (request to first text, client side; goal p50 <= 1.5 s) and
  tokens/s of generation.

With ``--adapters-dir`` and ``--adapter`` (repeatable; ``base`` is the base model) the
same questions are asked once per adapter — the stack's llm follows the registry's
``active.json`` — and the results printed side by side.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.llm.adapters import BASE_MODEL
from services.llm.grounding import CITATION
from styleloop.chat_questions import Question, build_questions
from styleloop.commands import add_command, gateway_argument

# A card's own layout in an answer: the model copied cards instead of answering.
CARD_FACTS = re.compile(r";\s*(Casual|Sports|Formal|Ethnic|Fall|Winter|Spring|Summer|looks:)")
GOALS = {"grounding": 1.0, "precision": 0.9, "idk_accuracy": 0.9, "ttft_p50_s": 1.5}


@dataclass
class Outcome:
    question: str
    kind: str
    answerable: bool
    retrieved: list[str] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)
    cited_meeting: int = 0
    citations: int = 0  # [n] in the text, repeats included
    named_citations: int = 0  # of those, right after the cited item's title
    copied_cards: bool = False  # the answer reproduces card lines ("; Casual; Fall 2011")
    finish: str = ""
    adapter_id: str = ""
    answer_id: str = ""
    text: str = ""
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    seconds: float = 0.0
    completion_tokens: int = 0
    error: str = ""

    @property
    def declined(self) -> bool:
        return self.finish == "no_items"

    @property
    def grounded(self) -> bool:
        return set(self.cited) <= set(self.retrieved)


def ask(
    client: Any, question: Question, user: str, max_new_tokens: int, max_items: int = 0
) -> Outcome:
    """One question through ``POST /v1/chat``, its events read as they stream;
    ``max_items`` cards to ground on (0: the chat's default)."""
    out = Outcome(question.text, question.kind, question.answerable)
    items: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    payload = {
        "user_id": user,
        "messages": [{"role": "user", "content": question.text}],
        "max_new_tokens": max_new_tokens,
    }
    if max_items:
        payload["max_items"] = max_items
    first_text_at = None
    with client.stream("POST", "/v1/chat", json=payload) as response:
        if response.status_code != 200:
            out.error = f"HTTP {response.status_code}: {response.read().decode()[:200]}"
            return out
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if kind == "retrieved":
                items = {i["item"]["item_id"]: i["item"] for i in data["items"]}
                out.retrieved = list(items)
            elif kind == "text":
                if first_text_at is None:
                    first_text_at = time.perf_counter()
                out.text += data["text"]
            elif kind == "reference":
                out.cited.append(data["item_id"])
            elif kind == "finish":
                out.finish = data["finish_reason"]
                out.adapter_id = data.get("adapter_id", "")
                out.answer_id = data.get("answer_id", "")
                out.completion_tokens = int(data.get("completion_tokens", 0))
            elif kind == "error":
                out.error = f"{data.get('reason')}: {data.get('message')}"
    return score(out, question, items, started, first_text_at)


def score(
    out: Outcome,
    question: Question,
    items: Mapping[str, Mapping[str, Any]],
    started: float,
    first_text_at: float | None,
) -> Outcome:
    """Fill in an answer's measures once its stream ended (``items``: the retrieved ones by
    id, in the gateway's item fields, which are the proto's; times from perf_counter)."""
    finished_at = time.perf_counter()
    out.seconds = finished_at - started
    if first_text_at is not None and not out.declined:
        out.ttft_s = first_text_at - started
        decode_s = finished_at - first_text_at
        out.tokens_per_s = out.completion_tokens / decode_s if decode_s > 0 else None
    out.cited_meeting = sum(1 for i in out.cited if i in items and question.meets(items[i]))
    out.copied_cards = bool(CARD_FACTS.search(out.text))
    titles = [str(i.get("title", "")) for i in items.values()]
    for match in CITATION.finditer(out.text):
        number = int(match.group(1))
        out.citations += 1
        if 1 <= number <= len(titles) and titles[number - 1]:
            head = " ".join(titles[number - 1].lower().split()[:4])
            before = out.text[max(0, match.start() - len(titles[number - 1]) - 12) : match.start()]
            out.named_citations += head in " ".join(before.lower().split())
    return out


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    answered = [o for o in outcomes if not o.error]
    cited = sum(len(o.cited) for o in answered)
    ttfts = sorted(o.ttft_s for o in answered if o.ttft_s is not None)
    speeds = [o.tokens_per_s for o in answered if o.tokens_per_s is not None]
    kinds: dict[str, list[Outcome]] = defaultdict(list)
    for o in answered:
        kinds[o.kind].append(o)

    def share(values: Sequence[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "questions": len(outcomes),
        "errors": len(outcomes) - len(answered),
        "grounding": share([o.grounded for o in answered]),
        "precision": (sum(o.cited_meeting for o in answered) / cited) if cited else None,
        "cited_items": cited,
        "idk_accuracy": share([o.declined == (not o.answerable) for o in answered]),
        "copied_cards": share([o.copied_cards for o in answered if o.citations]),
        "named_citations": (
            sum(o.named_citations for o in answered) / sum(o.citations for o in answered)
            if any(o.citations for o in answered)
            else None
        ),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else None,
        "tokens_per_s": statistics.mean(speeds) if speeds else None,
        "by_kind": {
            k: {
                "n": len(v),
                "idk_accuracy": share([o.declined == (not o.answerable) for o in v]),
                "precision": (
                    sum(o.cited_meeting for o in v) / max(1, sum(len(o.cited) for o in v))
                    if any(o.cited for o in v)
                    else None
                ),
            }
            for k, v in sorted(kinds.items())
        },
    }


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.1f}%"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def report(results: dict[str, dict[str, Any]]) -> list[str]:
    names = list(results)
    lines = ["metric".ljust(22) + "".join(n[:18].rjust(20) for n in names)]
    rows = (
        ("grounding", True, "100%"),
        ("precision", False, ">= 0.90"),
        ("idk_accuracy", False, ">= 0.90"),
        ("named_citations", True, ""),
        ("copied_cards", True, ""),
        ("ttft_p50_s", False, "<= 1.50"),
        ("ttft_p95_s", False, ""),
        ("tokens_per_s", False, ""),
        ("cited_items", False, ""),
        ("questions", False, ""),
        ("errors", False, ""),
    )
    for key, percent, goal in rows:
        cells = "".join(_fmt(results[n][key], percent).rjust(20) for n in names)
        lines.append(key.ljust(22) + cells + (f"   goal {goal}" if goal else ""))
    for name in names:
        lines.append(f"\n{name}: by kind (n, I-don't-know accuracy, precision)")
        for kind, row in results[name]["by_kind"].items():
            lines.append(
                f"  {kind:20s} {row['n']:3d}  {_fmt(row['idk_accuracy'])}  {_fmt(row['precision'])}"
            )
    for name in names:
        misses = [
            g
            for g, goal in GOALS.items()
            if results[name][g] is None
            or (results[name][g] > goal if g == "ttft_p50_s" else results[name][g] < goal)
        ]
        lines.append(
            f"{name}: {'all goals met' if not misses else 'goals missed: ' + ', '.join(misses)}"
        )
    return lines


def switch_adapter(adapters_dir: Path, adapter_id: str, client: Any, timeout_s: float) -> None:
    """Make the stack's llm serve ``adapter_id`` ("" = base) and wait until it does."""
    from services.llm.adapters import AdapterRegistry

    AdapterRegistry(adapters_dir).write_active(adapter_id)
    deadline = time.monotonic() + timeout_s
    probe = Question("show me t-shirts", "probe")
    while time.monotonic() < deadline:
        outcome = ask(client, probe, "eval-probe", 2)
        if outcome.adapter_id == adapter_id or (outcome.declined and not adapter_id):
            return
        time.sleep(1)
    raise RuntimeError(f"the llm did not switch to adapter {adapter_id or '(base)'!r}")


def main(
    catalog: Path,
    gateway: str,
    *,
    json_path: Path | None,
    per_kind: int,
    max_new_tokens: int,
    adapters_dir: Path | None,
    adapters: Sequence[str],
    api_key: str,
    progress: bool,
) -> int:
    import httpx
    from tqdm import tqdm

    from styleloop.catalog import CatalogError, read_catalog

    try:
        rows = [r.item for r in read_catalog(catalog).rows]
    except CatalogError as exc:
        sys.stderr.write(f"styleloop eval chat: {exc}\n")
        return 2
    questions = build_questions(rows, "eval", per_kind=per_kind)
    headers = {"X-API-Key": api_key} if api_key else {}
    runs = list(adapters) or ["served"]
    results: dict[str, dict[str, Any]] = {}
    outcomes_by_run: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=gateway, headers=headers, timeout=300) as client:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as exc:
            sys.stderr.write(f"styleloop eval chat: no gateway at {gateway} ({exc}); run make up\n")
            return 2
        for run in runs:
            if adapters_dir is not None and run != "served":
                try:
                    switch_adapter(adapters_dir, "" if run == BASE_MODEL else run, client, 120)
                except RuntimeError as exc:
                    sys.stderr.write(f"styleloop eval chat: {exc}\n")
                    return 1
            outcomes = [
                ask(client, q, f"eval-{run}-{n}", max_new_tokens)
                for n, q in enumerate(
                    tqdm(questions, desc=f"eval chat ({run})", disable=not progress, unit="q")
                )
            ]
            results[run] = summarise(outcomes)
            outcomes_by_run[run] = [asdict(o) for o in outcomes]
    for line in report(results):
        sys.stdout.write(line + "\n")
    if json_path is not None:
        json_path.write_text(
            json.dumps({"results": results, "answers": outcomes_by_run}, indent=2),
            encoding="utf-8",
        )
    return 0


def register(commands: Any) -> None:
    """``styleloop eval chat``: added to the eval group by :mod:`styleloop.cli`."""
    import argparse
    import os

    parser = add_command(
        commands,
        "chat",
        __doc__,
        help="grounding, constraint precision, I-don't-know accuracy and speed of chat",
    )
    parser.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    gateway_argument(parser)
    parser.add_argument("--per-kind", type=int, default=5, help="questions per kind (5)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--adapters-dir", type=Path, help="the stack's ADAPTERS_DIR")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="evaluate with this adapter active (repeatable; 'base' = none); needs --adapters-dir",
    )
    parser.add_argument("--json", type=Path, help="also write results and answers as JSON")
    parser.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from styleloop.catalog import configured_catalog

        catalog = configured_catalog(args.catalog)
        if catalog is None:
            sys.stderr.write("styleloop eval chat: give --catalog or set STYLELOOP_DATA_DIR\n")
            return 2
        if args.adapter and args.adapters_dir is None:
            sys.stderr.write("styleloop eval chat: --adapter needs --adapters-dir\n")
            return 2
        return main(
            catalog,
            args.gateway,
            json_path=args.json,
            per_kind=args.per_kind,
            max_new_tokens=args.max_new_tokens,
            adapters_dir=args.adapters_dir,
            adapters=args.adapter,
            api_key=os.environ.get("STYLELOOP_API_KEY", ""),
            progress=not args.no_progress,
        )

    parser.set_defaults(func=run)
