"""`styleloop up`: the whole stack as processes on free 127.0.0.1 ports (tiny preset, drawn
catalog), then, through the gateway's HTTP API only: a photo finds its item first, a
filtered text search, an outfit completion, feedback read back from the broker; then
Ctrl-C (SIGINT) leaves no process behind."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from styleloop.catalog import read_catalog
from tests.conftest import ROOT, run_cli


def free_block() -> int:
    """A base port with base..base+2 and base+100..base+102 all free a moment ago."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        sockets = []
        try:
            for port in (base, base + 1, base + 2, base + 100, base + 101, base + 102):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free block of ports")


def nobody_listens(port: int) -> bool:
    """Connection refused: no process serves the port any more (a bind test would trip
    over TIME_WAIT connections of the stopped servers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def call(url: str, body: dict | None = None, files: tuple[str, bytes] | None = None) -> dict:
    if files is not None:
        boundary = "styleloopboundary"
        name, data = files
        payload = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="image"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=payload, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def wait_for(predicate, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_up_runs_the_whole_stack_end_to_end(tiny_models: Path, drawn_catalog: Path, tmp_path: Path):
    base = free_block()
    gateway_port, kafka_port = base + 3, base + 4
    args = ["up", "--preset", "tiny", "--models-dir", str(tiny_models)]
    args += ["--catalog", str(drawn_catalog), "--state-dir", str(tmp_path / "stack")]
    args += ["--base-port", str(base), "--gateway-port", str(gateway_port)]
    args += ["--kafka-port", str(kafka_port), "--no-progress", "--query", "red t-shirt"]
    log = (tmp_path / "up.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "styleloop.cli", *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    out = tmp_path / "up.out"
    try:
        wait_for(lambda: "Running on 127.0.0.1" in out.read_text() or proc.poll() is not None)
        text = out.read_text()
        assert proc.poll() is None, text
        assert "80 items in the recommender (80 new this run)" in text
        url = f"http://127.0.0.1:{gateway_port}"
        assert f"Gateway: {url}" in text and "curl" in text

        rows = read_catalog(drawn_catalog).rows
        target = rows[5]
        found = call(
            f"{url}/v1/search/image?page_size=3", files=("p.png", target.image.read_bytes())
        )
        assert found["results"][0]["item"]["item_id"] == target.item["item_id"]
        skirts = call(
            f"{url}/v1/search/text",
            {"query": "skirt", "filter": {"categories": ["Skirts"]}, "page_size": 50},
        )
        assert skirts["results"] and {r["item"]["category"] for r in skirts["results"]} == {
            "Skirts"
        }
        outfit = call(
            f"{url}/v1/outfits/complete",
            {"item_ids": [target.item["item_id"]], "category": "Shoes", "page_size": 5},
        )
        assert outfit["results"] and all(
            r["item"]["category"] == "Shoes" for r in outfit["results"]
        )
        accepted = call(
            f"{url}/v1/feedback",
            {"events": [{"user_id": "u1", "item_id": target.item["item_id"], "kind": "reject"}]},
        )
        assert accepted["accepted"] == 1 and accepted["spooled"] is False
        tail = run_cli(
            "events", "tail", "--bootstrap", f"127.0.0.1:{kafka_port}", "--from-beginning",
            "--max", "1", "--timeout", "15",
        )  # fmt: skip
        event = json.loads(tail.stdout.splitlines()[0])
        assert event["event_id"] == accepted["event_ids"][0]
        assert event["kind"] == "INTERACTION_KIND_REJECT" and event["user_id"] == "u1"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(60)
        log.close()
    ports = (base, base + 1, base + 2, gateway_port, kafka_port)
    assert all(nobody_listens(p) for p in ports), out.read_text()  # nothing left behind
    for name in ("encoder", "captioner", "recommender", "gateway"):
        assert (tmp_path / "stack" / "logs" / f"{name}.log").stat().st_size > 0
    assert os.path.exists(tmp_path / "stack" / "ingest" / "journal.jsonl")
