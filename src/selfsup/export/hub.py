"""A Hugging Face Hub folder for an encoder: ``model.safetensors``, ``config.json`` and a
``README.md`` model card with the run's numbers, and (optionally) pushing it to a Hub repo.

When timm can build the encoder (:mod:`selfsup.export.library`), the folder is a timm Hub model:
``config.json`` has timm's fields (``architecture``, ``model_args``, ``pretrained_cfg`` with the
input size and normalisation), so ``timm.create_model("hf-hub:<repo>", pretrained=True)`` loads
it once pushed, and ``"local-dir:<folder>"`` before (timm >= 1.0.16). Otherwise the
weights keep selfsup's keys and ``selfsup.evaluation.load_encoder("<folder>/model.safetensors")``
rebuilds the encoder. ``config.json`` always carries selfsup's export config under ``"selfsup"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from selfsup.errors import SelfSupError
from selfsup.evaluation import LoadedEncoder
from selfsup.export.library import library_model, working_libraries
from selfsup.export.metadata import export_config, input_spec, stored_metadata

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"


def write_hub_folder(loaded: LoadedEncoder, checkpoint: str, folder: Path):
    """Write the Hub folder for ``loaded``'s encoder into ``folder``; returns an ``ExportResult``."""
    from selfsup.export import ExportResult, check_same_features, write_json, write_safetensors

    folder = Path(folder)
    if folder.suffix:
        raise SelfSupError(f"--output {folder}: a Hub export is a folder; give a folder name without a suffix")
    folder.mkdir(parents=True, exist_ok=True)
    meta = stored_metadata(checkpoint)
    spec = input_spec(loaded, meta)
    timm_model = library_model(loaded, "timm") if "timm" in working_libraries(loaded) else None
    if timm_model is not None:
        diff = check_same_features(loaded, timm_model.build(), "the timm model", spec["input_size"])
        write_safetensors(timm_model.state_dict, folder / WEIGHTS)
        library = {"name": "timm", "architecture": timm_model.architecture, "create_args": timm_model.create_args}
        load = f'import timm; model = timm.create_model("local-dir:{folder}", pretrained=True)'
    else:
        diff = 0.0
        write_safetensors(loaded.encoder.state_dict(), folder / WEIGHTS)
        library = None
        load = f'from selfsup.evaluation import load_encoder; encoder = load_encoder("{folder / WEIGHTS}").encoder'
    selfsup_config = export_config(loaded, checkpoint, meta, "hub", WEIGHTS, library, load)
    config: Dict[str, Any] = {}
    if timm_model is not None:
        create_args = {k: v for k, v in timm_model.create_args.items() if k != "num_classes"}
        pretrained_cfg = {"input_size": spec["input_size"], "interpolation": spec["interpolation"],
                          "crop_pct": spec["crop_pct"], "num_classes": 0,
                          # timm rebuilds a fixed-size model (a ViT without dynamic_img_size) at input_size
                          "fixed_input_size": "img_size" in create_args and not create_args.get("dynamic_img_size")}
        if spec["mean"] is not None:
            pretrained_cfg.update(mean=spec["mean"], std=spec["std"])
        config = {"architecture": timm_model.architecture, "num_classes": 0,
                  "num_features": getattr(loaded.encoder, "feature_dim", None),
                  "model_args": create_args, "pretrained_cfg": pretrained_cfg}
    config["selfsup"] = selfsup_config
    write_json(config, folder / CONFIG)
    _write_card(folder / CARD, selfsup_config, timm_model is not None)
    return ExportResult(folder, folder / CONFIG, load, diff)


def _write_card(path: Path, config: Dict[str, Any], timm_loadable: bool) -> None:
    """The model card: Hub metadata (``huggingface_hub.ModelCardData``) and what a reader needs."""
    from huggingface_hub import ModelCard, ModelCardData

    from selfsup.io import atomic_write_to

    method = config.get("method")
    training = config.get("training") or {}
    tags = ["selfsup", "self-supervised", "image-feature-extraction"] + ([method] if method else [])
    card_data = ModelCardData(library_name="timm" if timm_loadable else "selfsup", pipeline_tag="image-feature-extraction",
                              tags=tags)
    how = f"with **{method}**" if method else "(method not recorded)"
    where = f" on **{training['data']}** for {training['epochs']} epochs" if training.get("data") else ""
    lines = [f"# {config['backbone']} encoder, self-supervised{f' ({method})' if method else ''}", "",
             f"A {config['backbone']} backbone ({config['feature_dim']}-dimensional features) pre-trained "
             f"{how}{where} by selfsup.", ""]
    lines += ["## Use", "", "```python", config["load"], "features = model(images)  # (B, C, H, W) normalised -> "
              f"(B, {config['feature_dim']})" if timm_loadable else "features = encoder(images)", "```", ""]
    size = config["input_size"]
    lines += ["## Input", "", f"- images of {size[0]} channel(s), {size[1]}×{size[2]} pixels",
              f"- normalised with mean {config['mean']} and std {config['std']}" if config["mean"] else
              "- normalisation: not recorded in the checkpoint", ""]
    lines += ["## Evaluation", ""] + _eval_table(config.get("eval")) + [""]
    if training:
        lines += ["## Training", "", "```json", _json(training), "```", ""]
    lines += [f"Backbone arguments: `{_json(config['backbone_args'])}`; exported by selfsup {config['selfsup_version']}."]
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    atomic_write_to(path, lambda tmp: card.save(tmp))


def _eval_table(report: Optional[Dict[str, Any]]) -> list[str]:
    """Markdown rows: the trained encoder beside the floors of the run's eval.json."""
    if not report or "trained" not in report:
        return ["No evaluation was recorded for this checkpoint (`selfsup eval knn|linear --checkpoint …`)."]
    columns = [(k, t) for k, t in (("trained", "this encoder"), ("random_init", "random init (floor)"),
                                   ("pixels", "raw pixels")) if k in report]
    rows = [f"Test split of **{report.get('data')}**:", "", "| metric | " + " | ".join(t for _, t in columns) + " |",
            "|---|" + "---|" * len(columns)]
    for metric in sorted(k for k in report["trained"] if k.endswith(("top1", "top5"))):
        values = [report[k].get(metric) for k, _ in columns]
        rows.append(f"| {metric} | " + " | ".join("—" if v is None else f"{100 * v:.2f} %" for v in values) + " |")
    return rows


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=None, default=str)


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload ``folder`` to the Hub model repo ``repo_id`` (created if needed); returns its URL.
    Needs the network and a token (``huggingface-cli login`` or ``HF_TOKEN``)."""
    from huggingface_hub import constants

    retry = f"the folder is ready: push it later with `huggingface-cli upload {repo_id} {folder}`"
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise SelfSupError(f"cannot push to the Hub repo '{repo_id}': HF_HUB_OFFLINE is set; {retry}")
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Add selfsup encoder"))
    except Exception as err:  # network, authentication and HTTP errors differ by huggingface_hub version
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SelfSupError(f"cannot push to the Hub repo '{repo_id}' ({type(err).__name__}: {reason}); {retry}") from None
