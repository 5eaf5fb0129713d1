"""Smoke test of scripts/benchlib/bench_remote_scale.py (docs/scale.md's figures) at 2000
objects against the fixture's server: it runs end to end, its JSON has the figures, and a
push of nothing new costs a few requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.remote.conftest import ROOT, S3Server


def test_bench_remote_scale_small(tmp_path: Path, s3_server: S3Server) -> None:
    out = tmp_path / "scale.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchlib" / "bench_remote_scale.py"),
         "--work", str(tmp_path), "--objects", "2000", "--lookups", "50", "--json", str(out)],
        env={**os.environ, **s3_server.env}, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "cold lookups (50)" in r.stdout
    data = json.loads(out.read_text())
    assert data["objects"] == 2000
    assert data["push_unchanged"]["unchanged"] and data["push_unchanged"]["requests"] <= 5
    assert 0 < data["refresh_read"]["down"] < 2 * 1024 * 1024
    assert data["open_s"] > 0 and data["lookup_gets"] <= 2 and data["reader_peak_rss_kib"] > 0
    s3_server.delete_bucket(data["bucket"])
