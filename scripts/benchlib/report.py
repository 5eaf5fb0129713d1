"""Results: one `Figure` per measured quantity, its ratio, the table and the JSON.

Every two-sided figure compares side **a** (dosfs) with side **b** (the reference: disk-objectstore,
a native tool, or a smaller index) on the same data in the same run. Each side has the seconds of
each run and the work per run (calls, bytes, reads); the figure's value is derived from the median.

    speed ratio = (b seconds per unit of work) / (a seconds per unit of work)

so **> 1 means dosfs is faster** (10× = dosfs does the same work in a tenth of the time), whatever
the unit the table shows. Targets are minimum speed ratios, or maximum values for memory.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

# unit -> (kind, factor): "time": seconds per work x factor; "rate": work per second / factor
UNITS: dict[str, tuple[str, float]] = {
    "µs/call": ("time", 1e6),
    "µs/object": ("time", 1e6),
    "µs/lookup": ("time", 1e6),
    "µs/file": ("time", 1e6),
    "µs/entry": ("time", 1e6),
    "ms/read": ("time", 1e3),
    "s": ("time", 1.0),
    "MiB/s": ("rate", MIB),
    "files/s": ("rate", 1.0),
    "entries/s": ("rate", 1.0),
}


@dataclass
class Side:
    """One side of a figure: `runs` seconds each doing `work` units (calls, bytes, objects)."""

    name: str
    runs: list[float]
    work: float = 1.0
    peak_rss_mib: float | None = None
    note: str = ""

    def per_work(self) -> float:
        return statistics.median(self.runs) / self.work

    def value(self, unit: str) -> float:
        kind, factor = UNITS[unit]
        per = self.per_work()
        if kind == "time":
            return per * factor
        return (1.0 / per) / factor if per > 0 else float("inf")

    def to_json(self, unit: str) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value(unit), "unit": unit,
            "median_s": statistics.median(self.runs), "runs_s": self.runs, "work": self.work,
            "peak_rss_mib": self.peak_rss_mib, "note": self.note,
        }


@dataclass
class Figure:
    """A measured quantity. Two-sided (a vs b) with a speed-ratio target, or a set of plain values
    (memory) each with an upper bound."""

    key: str
    title: str
    unit: str = "s"
    a: Side | None = None
    b: Side | None = None
    target: float | None = None  # minimum speed ratio a vs b
    target_text: str = ""
    values: dict[str, tuple[float, str]] = field(default_factory=dict)
    value_max: float | None = None  # upper bound on every value (e.g. daemon RSS < 64 MiB)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def ratio(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        a = self.a.per_work()
        return self.b.per_work() / a if a > 0 else float("inf")

    def met(self) -> bool | None:
        if self.error:
            return False
        if self.target is not None:
            r = self.ratio()
            return None if r is None else r >= self.target
        if self.value_max is not None and self.values:
            return all(v <= self.value_max for v, unit in self.values.values() if unit == "MiB")
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "unit": self.unit, "params": self.params}
        if self.error:
            out["error"] = self.error
        if self.a is not None:
            out["a"] = self.a.to_json(self.unit)
        if self.b is not None:
            out["b"] = self.b.to_json(self.unit)
        if self.a is not None and self.b is not None:
            out["speed_ratio"] = self.ratio()
        if self.values:
            out["values"] = {k: {"value": v, "unit": u} for k, (v, u) in self.values.items()}
        out["target"] = self.target_text or None
        out["met"] = self.met()
        if self.extra:
            out["extra"] = self.extra
        return out


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def rss(side: Side | None) -> str:
    return "-" if side is None or side.peak_rss_mib is None else f"{side.peak_rss_mib:.0f}"


SECTIONS = [
    ("api.", "In-process API: a = dosfs, b = disk-objectstore 1.5.0 (same data, same run)"),
    ("mount.", "Mount: a = through `dosfs mount`, b = native access to the same bytes"),
    ("daemon.", "Daemon: a = mount of the large index, b = of the small one (counts in the rows)"),
    ("first.", "First read, fresh mounts: a = dosfs (verify on), b = the smallest pyfuse3 FS"),
    ("meta.", "Metadata: a = dosfs mount, b = the smallest pyfuse3 FS serving the same container"),
    ("backup.", "Backup: a = `dosfs backup`, b = `dostore backup` (same container and DEST)"),
    ("views.", "Views: a = nodes/ of a mount with --aiida-db, b = `verdi node repo dump`"),
    ("aiida.", "AiiDA: a = AiiDA on dosfs's Container, b = AiiDA on disk-objectstore's"),
]


def table(figures: list[Figure], markdown: bool = False) -> str:
    """The result table; speed ratio = b time / a time per unit of work, so > 1 = dosfs faster."""
    lines: list[str] = []
    head = ["figure", "a", "b", "a vs b speed (>1: a faster)", "target", "met",
            "a peak RSS MiB", "b peak RSS MiB"]
    for prefix, caption in SECTIONS:
        rows = [f for f in figures if f.key.startswith(prefix)]
        if not rows:
            continue
        body = []
        for f in rows:
            ok = {True: "yes", False: "NO", None: ""}[f.met()]
            if f.error:
                body.append([f.key, "ERROR", f.error[:60], "", f.target_text, ok, "", ""])
            elif f.values:
                vals = ", ".join(f"{k} {fmt(v, u)}" for k, (v, u) in f.values.items())
                body.append([f.key, vals, "", "", f.target_text, ok, "", ""])
            else:
                ratio = f.ratio()
                body.append([
                    f.key,
                    fmt(f.a.value(f.unit) if f.a else None, f.unit),
                    (f"{fmt(f.b.value(f.unit), f.unit)} ({f.b.name})" if f.b else "-"),
                    "-" if ratio is None else f"{ratio:.2f}×",
                    f.target_text, ok, rss(f.a), rss(f.b),
                ])
        if markdown:
            lines.append(f"**{caption}**\n")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines.extend("| " + " | ".join(r) + " |" for r in body)
            lines.append("")
        else:
            widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
            lines.append(caption)
            lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
            for r in body:
                lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
            lines.append("")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers came from (they only compare within one run on one machine)."""
    import os

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("pyfuse3", "trio", "disk_objectstore", "dosfs"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod.replace("_", "-"))
        except Exception:  # noqa: BLE001 - absent package: say so
            versions[mod] = "not installed"
    try:
        libfuse = subprocess.run(["fusermount3", "-V"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    except OSError:
        libfuse = ""
    try:
        git = ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "versions": versions, "fusermount3": libfuse,
        "git_commit": commit, "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES")
                                                     * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
    }


def read_json(path: Path) -> tuple[dict[str, Any], list[Figure]]:
    """The figures of a saved run (to print its table again, e.g. as Markdown for the docs)."""
    doc = json.loads(path.read_text())
    figures = []
    for key, f in doc["figures"].items():
        sides = {}
        for s in ("a", "b"):
            if s in f:
                j = f[s]
                sides[s] = Side(j["name"], j["runs_s"], j["work"], j["peak_rss_mib"], j["note"])
        target = None
        text = f.get("target") or ""
        if text.startswith("≥ ") and text.endswith("×"):
            target = float(text[2:-1])
        figures.append(Figure(
            key, f["title"], f["unit"], sides.get("a"), sides.get("b"), target=target,
            target_text=text, params=f.get("params", {}), extra=f.get("extra", {}),
            error=f.get("error"),
            values={k: (v["value"], v["unit"]) for k, v in f.get("values", {}).items()},
            value_max=64 if "values" in f and "64 MiB" in text else None))
    return doc["meta"], figures


def write_json(path: Path, meta: dict[str, Any], figures: list[Figure]) -> None:
    doc = {"meta": meta, "figures": {f.key: f.to_json() for f in figures}}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
