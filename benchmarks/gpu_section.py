"""Merge the JSON parts of ``benchmarks/gpu_suite.sh`` into one file and render a BENCHMARKS.md section.

    python benchmarks/gpu_section.py PART.json ... --json gpu_results.json --markdown gpu_section.md
    python benchmarks/gpu_section.py gpu_results.json                      # re-render a merged file

Each part is what one ``benchmarks/gpu_throughput.py`` sub-command wrote; they are told apart by
their keys. The section prints the command that made it beside the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

COMMAND = "OUT=<folder> FMNIST_DIR=<fashion-mnist folder> bash benchmarks/gpu_suite.sh"
MODEL_COLUMNS = [("ceiling", "backbone fwd+bwd (ceiling)"), ("plain", "plain PyTorch step"),
                 ("views-ready", "selfsup, views ready"), ("full", "selfsup full (views on side stream)"),
                 ("full-split", "selfsup full, folder crops"), ("full-serial", "full, views before step (old)"),
                 ("views-ready+compile(default)", "views ready + compile"),
                 ("full-split+compile(default)", "full (crops) + compile")]


def merge(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One document: machine, models (one per configuration and compile setting), default job, folder, decode."""
    merged: Dict[str, Any] = {"command": COMMAND, "machine": None, "models": [], "default_job": [], "folder": None,
                              "decode": None}
    for part in parts:
        if "merged" in part:  # already a merged document
            return part
        if "config" in part:
            merged["models"].append(part)
        elif "job" in part:
            merged["default_job"].append(part)
        elif "folder" in part:
            merged["folder"] = part
        elif "speedup" in part:
            merged["decode"] = part
        elif "gpu" in part and "line" in part:
            merged["machine"] = part
        if merged["machine"] is None and isinstance(part.get("machine"), dict):
            merged["machine"] = part["machine"]
    merged["merged"] = True
    return merged


def _rate(row: Optional[Dict[str, Any]]) -> str:
    if row is None:
        return "—"
    if "error" in row:
        return "error"
    text = f"{row['img_per_s']:.0f}"
    if "p25" in row and "p75" in row:
        text += f" ({row['p25']:.0f}–{row['p75']:.0f})"
    return text


def _ratio(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> str:
    if not a or not b or "img_per_s" not in a or "img_per_s" not in b or not b["img_per_s"]:
        return "—"
    return f"{a['img_per_s'] / b['img_per_s']:.2f}"


def render(doc: Dict[str, Any]) -> str:
    lines: List[str] = ["### GPU throughput (issue 18)", ""]
    machine = doc.get("machine") or {}
    lines.append(f"Machine: {machine.get('line', 'unknown')}.  ")
    lines.append(f"Command: `{doc.get('command', COMMAND)}` (writes `gpu_results.json` and this section; "
                 "`python benchmarks/gpu_section.py gpu_results.json` re-renders it).")
    lines.append("")
    notes: List[str] = []
    models: Dict[str, Dict[str, Dict[str, Any]]] = {}
    batch = size = None
    for part in doc.get("models", []):
        rows = models.setdefault(part["config"], {})
        batch, size = part.get("batch_size", batch), part.get("image_size", size)
        for row in part.get("rows", []):
            rows[row["row"]] = row
            if "error" in row:
                notes.append(f"{part['config']} / {row['row']}: {row['error']}")
            if row["row"] == "compile-time" and "seconds" in row:
                notes.append(f"{part['config']}: torch.compile took {row['seconds']} s "
                             f"({'compiled' if row.get('compiled') else 'fell back to eager'}).")
    if models:
        lines.append(f"Training step, images/s: median of the timed steps (quartiles in brackets), bf16 autocast, "
                     f"batch {batch}, {size}-px global views; CUDA-event timing.")
        lines.append("")
        present = [(key, title) for key, title in MODEL_COLUMNS if any(key in rows for rows in models.values())]
        header = ["configuration"] + [title for _, title in present] + ["full ÷ views-ready", "full ÷ plain"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for config, rows in models.items():
            cells = [config] + [_rate(rows.get(key)) for key, _ in present]
            cells += [_ratio(rows.get("full"), rows.get("views-ready")), _ratio(rows.get("full"), rows.get("plain"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    jobs = [row for part in doc.get("default_job", []) for row in part.get("rows", [])]
    if jobs:
        lines.append("`selfsup train` default job (SimCLR, resnet18-tiny, Fashion-MNIST, batch 256) on the GPU, "
                     "steps/s after the warm-up steps:")
        lines.append("")
        lines.append("| variant | steps/s | median step (ms) | host syncs per step | where |")
        lines.append("|---|---|---|---|---|")
        for row in jobs:
            if "error" in row:
                lines.append(f"| {row['row']} | error | | | |")
                notes.append(f"default job / {row['row']}: {row['error']}")
                continue
            sites = ", ".join(f"{k} ×{v}" for k, v in (row.get("sync_sites") or {}).items()) or "—"
            lines.append(f"| {row['row']} | {row['steps_per_s']:.1f} | {row['median_step_ms']:.2f} | "
                         f"{row.get('host_syncs_per_step', '—')} | {sites} |")
        lines.append("")
    folder = doc.get("folder")
    if folder:
        lines.append(f"Image folder: {folder.get('images', '?')} JPEGs (ImageNet-like sizes, quality 90, in the page "
                     f"cache), {folder.get('workers')} DataLoader workers, batch {folder.get('batch_size')}, "
                     "SimCLR views:")
        lines.append("")
        lines.append("| stage | images/s | (slowest–fastest wave) |")
        lines.append("|---|---|---|")
        titles = {"decode-torchvision": "decode only, torchvision.io", "decode-pil": "decode only, PIL",
                  "loader-split": "loader: decode + crop/flip (split views)",
                  "loader-per-image": "loader: decode + all views per image (old path)",
                  "full-split": "full: loader + colour ops on GPU + ResNet-50 step"}
        for row in folder.get("rows", []):
            if "error" in row:
                notes.append(f"folder / {row['row']}: {row['error']}")
                lines.append(f"| {titles.get(row['row'], row['row'])} | error | |")
                continue
            spread = f"{row['min']:.0f}–{row['max']:.0f}" if "min" in row else ""
            extra = f"; data wait {100 * row['data_wait_share']:.0f} % of the step" if "data_wait_share" in row else ""
            lines.append(f"| {titles.get(row['row'], row['row'])} | {row['img_per_s']:.0f} | {spread}{extra} |")
        lines.append("")
        if folder.get("limit"):
            lines.append(f"Limiting stage: **{folder['limit']}**; the split loader would need "
                         f"{folder.get('cores_for_2400_img_per_s', '?')} cores for 2400 img/s.")
            lines.append("")
    decode = doc.get("decode")
    if decode:
        lines.append(f"Decoding one JPEG on one thread: PIL {decode['pil_ms_per_image']} ms, torchvision.io "
                     f"{decode['torchvision_ms_per_image']} ms ({decode['speedup']}× faster), {decode['files']} files.")
        lines.append("")
    if notes:
        lines.append("Notes: " + " ".join(f"{n}" if n.endswith(".") else f"{n}." for n in notes))
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", help="JSON files from gpu_throughput.py (or one merged file)")
    p.add_argument("--json", help="write the merged document here")
    p.add_argument("--markdown", help="write the section here (it is printed in any case)")
    p.add_argument("--command", help="the command line to print beside the tables")
    args = p.parse_args(argv)
    parts = []
    for path in args.parts:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            print(f"skipping {path}: {err}", file=sys.stderr)
    doc = merge(parts)
    if args.command:
        doc["command"] = args.command
    text = render(doc)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
