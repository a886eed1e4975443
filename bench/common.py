"""What the benchmark scripts share: paths, the machine's figures, JSON output.

The scripts measure; they are not tests. Each prints one JSON object on
stdout, compares against ../shared/bench/seed_baseline.py in the same run and
alternates the order of the contenders from round to round, because these
machines vary by 2x from one run to the next.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
BASELINE = SHARED / "bench" / "seed_baseline.py"
EXIT_MISSING = 2

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def require(path: Path, what: str) -> Path:
    """Exit with a clear message (code 2) when a file the benchmark needs is absent."""
    if not path.exists():
        print(
            f"{Path(sys.argv[0]).name}: {what} not found at {path}; this benchmark needs the "
            "shared folder next to the repository (../shared/data, ../shared/bench) "
            "or an explicit path",
            file=sys.stderr,
        )
        sys.exit(EXIT_MISSING)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    VmHWM from /proc/self/status where there is one: Linux's ru_maxrss keeps the
    parent's peak across fork and exec, so a worker started by a big parent would
    report the parent's memory. ru_maxrss elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_peak_gflops() -> dict:
    """Peak float32 FLOP/s of this CPU: cores x clock x FLOP per cycle, 64 where it has
    AVX-512 (2 FMA units x 16 lanes x 2), else 32 (AVX2: 2 FMA units x 8 lanes x 2)."""
    clock_mhz, flags = None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz") and clock_mhz is None:
                clock_mhz = float(line.split(":")[1])
            elif line.lower().startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    per_cycle = 64 if " avx512f" in flags else 32
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    peak = cores * clock_mhz * 1e6 * per_cycle / 1e9 if clock_mhz else None
    return {
        "cores": cores,
        "clock_mhz": clock_mhz,
        "flop_per_cycle": per_cycle,
        "peak_gflops": round(peak, 1) if peak else None,
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4) if values else float("nan")


def emit(result: dict) -> None:
    print(json.dumps(result))


def last_json_line(text: str) -> dict:
    """The last line of a child's stdout that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON line in the output:\n{text[-2000:]}")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), None where unavailable."""

    def sample():
        with open("/proc/stat") as handle:
            values = [int(value) for value in handle.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    try:
        busy_before, total_before = sample()
        time.sleep(seconds)
        busy_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(total_after - total_before, 1)


# Set to False (--no-wait) to measure at once, e.g. in the tests of these scripts.
WAIT = True


def add_wait_option(parser) -> None:
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="measure at once instead of waiting for quiet CPUs (and never repeat)",
    )


def apply_wait_option(args) -> None:
    global WAIT
    WAIT = not args.no_wait


def wait_for_quiet(threshold: float = 0.15, max_wait: float = 600.0) -> dict:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs mostly idle.

    These machines are shared: a measurement taken while someone else trains
    says nothing. Returns how busy the CPUs were when the wait ended and how
    long it took, for the record.
    """
    if not WAIT:
        return {"cpu_busy_before": None, "waited_s": 0.0}
    started = time.perf_counter()
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.perf_counter() - started < max_wait:
        time.sleep(4.0)
        busy = cpu_busy()
    return {
        "cpu_busy_before": None if busy is None else round(busy, 3),
        "waited_s": round(time.perf_counter() - started, 1),
    }


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent so far (from /proc/stat), None where unavailable."""
    try:
        with open("/proc/stat") as handle:
            values = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(run, *, retries: int = 3, max_foreign: float = 0.1):
    """Call ``run()`` once the CPUs are quiet; again if others used them meanwhile.

    Other people's processes on a shared machine show up as CPU time that is
    neither this process's nor its children's. A measurement during which
    they took more than ``max_foreign`` of the CPUs is repeated (at most
    ``retries`` times; the last one is kept, and says so).

    Returns:
        (what ``run`` returned, a dict with the foreign CPU share and attempts).
    """
    cores = os.cpu_count() or 1
    for attempt in range(1, retries + 2):
        quiet = wait_for_quiet()
        busy, own, started = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if busy is None:
            return result, {**quiet, "foreign_cpu_share": None, "attempts": attempt}
        foreign = (_busy_cpu_seconds() - busy) - (_own_cpu_seconds() - own)
        share = max(0.0, foreign) / max(elapsed * cores, 1e-9)
        record = {**quiet, "foreign_cpu_share": round(share, 3), "attempts": attempt}
        if share <= max_foreign or attempt > retries or not WAIT:
            return result, record
    raise AssertionError("unreachable")
