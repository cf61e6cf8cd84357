"""`styleloop drill`, its fast part (also in `make drill` with every fault): a stack of its
own under steady load while the recommender is killed with SIGKILL and restarted and the
broker is stopped and started, the spool's disk fills while the broker is down, and a short
soak samples every process's memory; the drill's own checks decide its exit status (no 500, no
hang, serving again, state intact, every accepted event read back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_ports
from tests.integration.test_up import free_block


def test_kill_9_of_the_recommender_and_a_broker_outage_break_no_promise(
    tiny_models: Path, drawn_catalog: Path, tmp_path: Path
):
    base = free_block()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "styleloop.cli",
            "drill",
            "--models-dir",
            str(tiny_models),
            "--catalog",
            str(drawn_catalog),
            "--state-dir",
            str(tmp_path / "drill"),
            "--base-port",
            str(base),
            "--gateway-port",
            str(base + 3),
            "--kafka-port",
            str(base + 4),
            "--s3-port",
            str(free_ports(1)[0]),
            "--items",
            "40",
            "--down-s",
            "2",
            "--broker-down-s",
            "5",
            "--soak-s",
            "8",
            "--sample-s",
            "1",
            "--results",
            str(tmp_path / "results"),
            "--faults",
            "recommender,broker,spool-full,soak",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    killed = rows["kill -9 recommender"]
    assert "503:" in killed, killed  # it was down, and said so
    assert "catalog and user state intact" in done.stdout
    outage = rows["broker stopped 5 s"]
    accepted, delivered, lost = (int(x) for x in outage.split()[-5:-2])  # then "N.N s"
    assert accepted > 0 and delivered == accepted and lost == 0, outage
    full = rows["spool disk full"]
    if os.geteuid() == 0:  # root can mount the size-limited disk the fault needs
        assert "503:" in full, full
        refused = done.stdout.split("feedback refused while full: ")[1].split()[0]
        assert int(refused) > 0, done.stdout
    soak = json.loads((tmp_path / "results" / "soak.json").read_text())
    rss = soak["figures"]["rss_mib"]
    assert {"gateway", "recommender", "encoder", "broker"} <= set(rss), rss
    assert all(v is not None and v > 10 for v in rss["gateway"]), rss["gateway"]
    assert (tmp_path / "results" / "soak.png").stat().st_size > 0
    assert done.stdout.rstrip().endswith("all promises held")
