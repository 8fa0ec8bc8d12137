"""Does a committed study report reproduce here? Re-run one of its seeds with the config it
records and compare, first difference first: the data's hash, then package versions, then the
metrics (``lastvit-study --check REPORT.json``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lastvit.provenance import package_differences

from .config import StudyConfig
from .runner import StudyError, run_study


@dataclass
class CheckResult:
    """The outcome of :func:`check_report`: ``differences`` in the order data hash, package
    versions, metrics, each one line; empty when the seed reproduced exactly."""

    report: str
    seed: int
    differences: list[str] = field(default_factory=list)
    metrics_compared: int = 0
    rerun: dict = field(default_factory=dict)  # what the re-run's report.json holds

    @property
    def matches(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        """The verdict line, then up to ``limit`` differences."""
        if self.matches:
            return (
                f"check: seed {self.seed} of {self.report} reproduces exactly (data hashes, package versions and "
                f"{self.metrics_compared} metrics equal)."
            )
        lines = [
            f"check: seed {self.seed} of {self.report} does NOT reproduce; first difference: {self.differences[0]}"
        ]
        if len(self.differences) > 1:
            lines.append(f"all {len(self.differences)} differences:")
            lines += [f"  {line}" for line in self.differences[:30]]
            if len(self.differences) > 30:
                lines.append(f"  ... and {len(self.differences) - 30} more")
        return "\n".join(lines)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def config_from_report(recorded: dict, seed: int, output_dir: Path, progress: bool = False) -> StudyConfig:
    """The :class:`StudyConfig` a report records, for one ``seed``, writing into ``output_dir``."""
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}
    return StudyConfig(
        **{**fields, "output_dir": Path(output_dir), "overwrite": True, "seeds": (seed,), "progress": progress}
    )


def compare(committed: dict, rerun: dict, seed: int) -> tuple[list[str], int]:
    """Differences between a committed report and a re-run of its ``seed`` (data hash, then package
    versions, then metrics in the report's order), and how many metrics were compared."""
    differences = []
    recorded_hashes = committed.get("data_fingerprint")
    if recorded_hashes is None:
        differences.append("data hash: the committed report records none (made before data hashes were recorded)")
    else:
        for split, value in recorded_hashes.items():
            now = rerun.get("data_fingerprint", {}).get(split)
            if value != now:
                differences.append(f"data hash of the {split} split: committed {value}, now {now}")
    for name, recorded, current in package_differences(committed.get("environment", {}), rerun["environment"]):
        differences.append(f"package {name}: committed {recorded}, installed {current}")
    index, compared = committed["seeds"].index(seed), 0
    for variant, runs in committed["per_seed"].items():
        new = rerun["per_seed"].get(variant)
        if not new:
            differences.append(f"metric: variant {variant} was not re-run")
            continue
        for metric, value in runs[index].items():
            compared += 1
            if not _same(value, new[0].get(metric)):
                differences.append(f"metric {variant} {metric}: committed {value}, now {new[0].get(metric)}")
    return differences, compared


@contextlib.contextmanager
def recorded_threads(committed: dict):
    """Run with the report's CPU thread count: on a CPU, torch's intra-op thread count changes how
    sums are split and so the last bits of every metric (a 1-thread and a 2-thread run of the same
    seed differ in the third decimal). GPU reports and reports without the count run as they are."""
    import torch

    environment = committed.get("environment", {})
    recorded = environment.get("cpu_threads")
    if not recorded or str(environment.get("device", "cpu")) != "cpu" or recorded == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    print(f"check: running with the report's {recorded} CPU thread(s) (torch had {previous})", flush=True)
    torch.set_num_threads(recorded)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_report(report: str | Path, seed: int = 0, progress: bool = False) -> CheckResult:
    """Re-run ``seed`` of the study in ``report`` (its report.json) with the config it records,
    in a temporary folder, and compare (see :func:`compare`)."""
    path = Path(report)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise StudyError(f"--check {report}: no such report.json.")
    committed = json.loads(path.read_text())
    if seed not in committed.get("seeds", []):
        raise StudyError(f"--check-seed {seed}: the report ran seeds {committed.get('seeds')}; pick one of them.")
    with tempfile.TemporaryDirectory(prefix="lastvit-check-") as folder, recorded_threads(committed):
        config = config_from_report(committed["config"], seed, Path(folder) / "study", progress)
        rerun = run_study(config)
    differences, compared = compare(committed, rerun, seed)
    return CheckResult(str(report), seed, differences, compared, rerun)


__all__ = ["CheckResult", "check_report", "compare", "config_from_report", "recorded_threads"]
