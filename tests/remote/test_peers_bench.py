"""Smoke test of scripts/benchlib/bench_remote_peers.py (`scripts/bench remote`'s peers) on tiny
sizes against the fixture's server: it runs end to end behind the slow link (loopback is the
same code without the forwarder), every side reads right bytes (the reader checks them),
downloads are counted, and nothing stays mounted. rclone and
s3fs are used when installed; the test never installs them (--no-install), and without them
the bench measures dosfs's sides and says the peers are missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.remote.conftest import ROOT, S3Server


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


def test_bench_remote_peers_small(tmp_path: Path, s3_server: S3Server) -> None:
    out = tmp_path / "peers.json"
    before = _mounts().count("/tmp/peers-")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchlib" / "bench_remote_peers.py"),
         "--server", str(s3_server.dir), "--work", str(tmp_path), "--small", "40",
         "--read", "10", "--seq-mib", "4", "--runs", "1", "--delay-ms", "5",
         "--rate-mbit", "400", "--links", "slow", "--no-drop-caches", "--no-install",
         "--json", str(out)],
        env={**os.environ, **s3_server.env}, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert "link: slow" in r.stdout and "issue 19's targets" in r.stdout
    assert ("PEERS NOT MEASURED" in r.stdout) == bool(data["peers_missing"])
    want = {"dosfs", "rc", "get"} | (set() if data["peers_missing"] else {"rclone", "s3fs"})
    for name in ("slow",):
        link = data["links"][name]
        assert not link.get("untrusted"), link.get("check")
        assert set(link["sides"]) == want
        for side, runs in link["sides"].items():
            seq = runs[0]["seq"]
            assert seq["first"] > 0 and seq["per_byte"] >= 0.99, (name, side, seq)
            if side != "get":
                assert runs[0]["random"]["per_byte"] > 0.5, (name, side)
    assert data["links"]["slow"]["check"]["rtt_ms"] >= 10
    assert _mounts().count("/tmp/peers-") == before
