"""``report.md`` and ``report.json`` of one ``lastvit-benchmark`` run, written whole (`lastvit.files.write_folder`)."""

from __future__ import annotations

import json
from pathlib import Path


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in metrics.items():
        if key == "per_class_iou":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and all(not isinstance(v, dict) for v in value.values()) and len(value) <= 12:
            rows += [(f"{name} / {k}", v) for k, v in value.items()]
        elif isinstance(value, dict):
            rows += _flat(value, f"{name} / ")
        else:
            rows.append((name, value))
    return rows


def markdown_report(report: dict) -> str:
    """The metrics, the protocol's settings, the throughput and the paper's numbers, as Markdown."""
    lines = [
        f"# {report['benchmark']}: {report['summary']}",
        "",
        f"Model `{report['model']}` ({report['model_kind']}), data `{report['data_dir']}`, device {report['device']}.",
    ]
    if "command" in report:
        lines += ["", f"    {report['command']}"]
    if report.get("limit") is not None:
        lines += [
            "",
            f"**Only the first {report['limit']} images were evaluated (--limit): not the benchmark's number.**",
        ]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in _flat(report["metrics"])]
    per_class = report["metrics"].get("per_class_iou")
    if per_class:
        lines += ["", "<details><summary>per-class IoU</summary>", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {'—' if value is None else f'{value:.4f}'} |" for name, value in per_class.items()]
        lines += ["", "</details>"]
    lines += ["", "## Protocol", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in report["protocol"].items()]
    speed = report["throughput"]
    timing = (
        f"{speed['images']} images in {speed['wall_s']} s ({speed['end_to_end_images_per_s']} images/s end to end; "
        f"batch {speed['batch_size']}, {speed['num_workers']} loader workers): the model ran {speed['model_s']} s "
        f"({speed['model_images_per_s']} images/s) and waited {speed['loader_wait_s']} s for the loader "
        f"({speed['loader_images_per_s']} images/s)."
    )
    lines += ["", "## Throughput", "", timing, "", "## The paper", "", report["paper"]]
    return "\n".join(lines) + "\n"


def write_report(folder, report: dict) -> None:
    """``report.json`` and ``report.md`` in `folder` (called inside `write_folder`'s staging folder)."""
    folder = Path(folder)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "report.md").write_text(markdown_report(report))
