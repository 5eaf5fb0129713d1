"""The mounts compared in bench_remote_peers.py: `dosfs mount s3://`, `rclone mount
--vfs-cache-mode full` and s3fs with `use_cache`, each started, timed until it answers, measured
(peak RSS) and always unmounted. The peers come from Debian's packages, installed here when
missing, never by scripts/setup: only this comparison needs them.

Every peer is configured explicitly for one endpoint on 127.0.0.1 (keys, region, endpoint; no
config file, no AWS_* or proxy variables, no instance metadata), so it never asks any other
address."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dosfs.mount import daemon_pids

TOOLS = ("rclone", "s3fs")
START_LIMIT = 60.0


def ensure_tools(install: bool = True) -> str | None:
    """Install rclone and s3fs from Debian when missing (unless not `install`); None when both
    are there, else why they are not."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not missing:
        return None
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{' '.join(missing)} missing (apt-get install {' '.join(missing)})"
    print(f"installing {' '.join(missing)} from Debian for the peer figures", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            return f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-300:]}"
    return None


def tool_versions() -> dict[str, str]:
    out = {}
    for tool, flag in (("rclone", "version"), ("s3fs", "--version")):
        if shutil.which(tool) is None:
            out[tool] = "missing"
            continue
        r = subprocess.run([tool, flag], capture_output=True, text=True)
        out[tool] = (r.stdout or r.stderr).splitlines()[0].strip() if r.returncode == 0 else "?"
    return out


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str
    region: str

    @staticmethod
    def from_env() -> Keys:
        e = os.environ
        return Keys(e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"],
                    e.get("AWS_DEFAULT_REGION", "us-east-1"))


def plain_env() -> dict[str, str]:
    """This environment without AWS_*, proxies or CA bundles: a peer must take nothing from it
    (rclone's S3 client fails on AWS_CA_BUNDLE over plain http, for one)."""
    drop = ("AWS_", "RCLONE_")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(drop) and "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    return env


def rclone_env(keys: Keys, endpoint: str) -> dict[str, str]:
    """A remote named `peer` given entirely by variables: provider Ceph, no env_auth."""
    conf = {"TYPE": "s3", "PROVIDER": "Ceph", "ENV_AUTH": "false",
            "ACCESS_KEY_ID": keys.access_key, "SECRET_ACCESS_KEY": keys.secret_key,
            "REGION": keys.region, "ENDPOINT": endpoint, "NO_CHECK_BUCKET": "true"}
    return {**plain_env(), **{f"RCLONE_CONFIG_PEER_{k}": v for k, v in conf.items()}}


class Downloads:
    """Bytes the gateway sent in answer to GETs, from its access log: one `beast:` line per
    request, written when the request ends, with the bytes really sent, also of a GET the
    client abandoned (its perf counter `get_b` counts the bytes asked for instead, which
    overstates a client that asks for long ranges and stops reading, as rclone does). Counted
    on the server, so the same way for every client."""

    LINE = re.compile(rb'beast: .*"GET \S+ HTTP/[\d.]+" (\d{3}) (\d+) ')

    def __init__(self, server_dir: Path) -> None:
        self.log = server_dir / "log" / "client.rgw.log"

    def mark(self) -> int:
        time.sleep(0.1)  # the daemon's log is written by a thread of its own, within ms
        return self.log.stat().st_size

    def since(self, mark: int) -> tuple[int, int]:
        """(bytes sent, GET requests) from `mark` to now."""
        end = self.mark()
        with open(self.log, "rb") as f:
            f.seek(mark)
            text = f.read(end - mark)
        hits = [int(m.group(2)) for m in self.LINE.finditer(text) if m.group(1)[:1] == b"2"]
        return sum(hits), len(hits)


def vm_hwm(pid: int) -> float:
    """Peak RSS (VmHWM) of a process in MiB, nan when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Mount:
    """One mount of the container (kind dosfs, rclone or s3fs) at `point` with a fresh cache;
    `start()` returns the seconds until `probe` (a path below the mount) answers stat()."""

    def __init__(self, kind: str, keys: Keys, endpoint: str, bucket: str, prefix: str,
                 point: Path, scratch: Path) -> None:
        self.kind, self.keys, self.endpoint = kind, keys, endpoint
        self.bucket, self.prefix, self.point, self.scratch = bucket, prefix, point, scratch
        self.cache = scratch / f"cache-{kind}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.log = scratch / f"{kind}.log"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        if self.kind == "dosfs":
            opts = (f"cache_dir={self.cache},refresh=0,fsname=dosfs-peers,"
                    f"endpoint={self.endpoint}")
            return ([sys.executable, "-m", "dosfs.cli", "mount", "-o", opts,
                     f"s3://{self.bucket}/{self.prefix}", str(self.point)], dict(os.environ))
        if self.kind == "rclone":
            conf = self.scratch / "rclone.conf"
            conf.touch()
            return (["rclone", "--config", str(conf), "mount", f"peer:{self.bucket}/{self.prefix}",
                     str(self.point), "--vfs-cache-mode", "full", "--cache-dir", str(self.cache)],
                    rclone_env(self.keys, self.endpoint))
        passwd = self.scratch / "s3fs.passwd"
        passwd.write_text(f"{self.keys.access_key}:{self.keys.secret_key}\n")
        passwd.chmod(0o600)
        opts = (f"url={self.endpoint},use_path_request_style,passwd_file={passwd},"
                f"use_cache={self.cache},endpoint={self.keys.region}")
        return (["s3fs", f"{self.bucket}:/{self.prefix}", str(self.point), "-f", "-o", opts],
                plain_env())

    def start(self, probe: str) -> float:
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True)
        self.point.mkdir(parents=True, exist_ok=True)
        cmd, env = self._command()
        with open(self.log, "ab") as log:
            t = time.perf_counter()
            if self.kind == "dosfs":  # returns once mounted; the daemon runs on
                if subprocess.run(cmd, env=env, stdout=log, stderr=log).returncode != 0:
                    raise RuntimeError(f"dosfs mount failed: {self.log.read_text()[-500:]}")
            else:
                self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            while True:
                try:
                    os.stat(self.point / probe)
                    break
                except OSError:
                    pass
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: "
                                       f"{self.log.read_text()[-500:]}")
                if time.perf_counter() - t > START_LIMIT:
                    raise RuntimeError(f"{self.kind} did not answer in {START_LIMIT:.0f} s")
                time.sleep(0.005)
            took = time.perf_counter() - t
        if self.proc is not None:
            self.pid = self.proc.pid
        else:
            pids = daemon_pids(self.point)
            self.pid = pids[0] if pids else 0
        return took

    def peak_rss(self) -> float:
        return vm_hwm(self.pid) if self.pid else float("nan")

    def stop(self) -> None:
        """Unmount, whatever state the mount is in; then make sure the process is gone."""
        if self.kind == "dosfs":
            r = subprocess.run([sys.executable, "-m", "dosfs.cli", "umount", str(self.point)],
                               capture_output=True)
        else:
            r = subprocess.run(["fusermount3", "-u", str(self.point)], capture_output=True)
        if r.returncode != 0 and os.path.ismount(self.point):
            subprocess.run(["fusermount3", "-uz", str(self.point)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
