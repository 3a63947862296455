"""Take a trained encoder out of selfsup: safetensors, torchvision, timm, ONNX, TorchScript, or a
Hugging Face Hub folder, each with a JSON config beside the weights and a one-line load snippet.

Example:
    >>> result = export_encoder_as("runs/simclr/last.ckpt", "timm", "encoder.safetensors")
    >>> print(result.load)   # import timm, safetensors.torch; model = timm.create_model(...)

Formats (``EXPORT_FORMATS``):

* ``safetensors``: the encoder's own state dict (selfsup keys) + ``<name>.json``; ``selfsup eval
  --checkpoint <name>.safetensors`` and :func:`selfsup.evaluation.load_encoder` read it back.
* ``torchvision`` / ``timm``: the weights under that library's key names, for its constructor
  (:mod:`selfsup.export.library`); refused in one line for a backbone it cannot build.
* ``onnx`` (``torch.onnx.export``, dynamic batch) and ``torchscript`` (``torch.jit.trace``): the
  whole encoder at the training resolution, normalised images in, pooled features out.
* ``hub``: a folder ``model.safetensors`` + ``config.json`` + ``README.md`` (model card) that
  timm loads with ``timm.create_model("hf-hub:<repo>", pretrained=True)`` once pushed.

Every export is checked before it is kept: the library model, ONNX graph or traced module must
give the selfsup encoder's features on a random batch (max abs difference ≤ 1e-4).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from selfsup.errors import ConfigError, SelfSupError
from selfsup.evaluation import LoadedEncoder, load_encoder
from selfsup.export.library import LIBRARIES, LibraryModel, library_model, working_libraries
from selfsup.export.metadata import export_config, input_spec, stored_metadata
from selfsup.io import atomic_write_text, atomic_write_to

EXPORT_FORMATS = ("safetensors", "torchvision", "timm", "onnx", "torchscript", "hub")
SUFFIXES = {"safetensors": ".safetensors", "torchvision": ".safetensors", "timm": ".safetensors",
            "onnx": ".onnx", "torchscript": ".pt", "hub": ""}
TOLERANCE = 1e-4  # max abs feature difference an export may show against the selfsup encoder
ONNX_INPUT, ONNX_OUTPUT = "images", "features"


@dataclass
class ExportResult:
    path: Path
    """The weights file, or the Hub folder."""
    config_path: Path
    """The JSON beside the weights."""
    load: str
    """One line of Python that loads the export."""
    max_abs_diff: float
    """Largest feature difference from the selfsup encoder on a random batch."""


def formats_that_work(loaded: LoadedEncoder) -> list[str]:
    """The export formats available for ``loaded``'s encoder."""
    libraries = working_libraries(loaded)
    return [f for f in EXPORT_FORMATS if f not in LIBRARIES or f in libraries]


def default_output(checkpoint: str, export_format: str) -> Path:
    """``<checkpoint folder>/encoder[-<format>].<suffix>``, or ``…/hub`` for a Hub folder."""
    folder = Path(checkpoint).parent
    if export_format == "hub":
        return folder / "hub"
    name = "encoder" if export_format in ("safetensors", "onnx", "torchscript") else f"encoder-{export_format}"
    return folder / f"{name}{SUFFIXES[export_format]}"


def export_encoder_as(checkpoint: str, export_format: str = "safetensors", output: Optional[str | Path] = None,
                      loaded: Optional[LoadedEncoder] = None) -> ExportResult:
    """Write the encoder of ``checkpoint`` (a ``selfsup train`` checkpoint or an exported encoder)
    in ``export_format`` to ``output`` (default :func:`default_output`) with its JSON config."""
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{export_format}'; valid formats: {', '.join(EXPORT_FORMATS)}")
    loaded = loaded or load_encoder(checkpoint)
    loaded.encoder.eval()
    path = Path(output) if output is not None else default_output(checkpoint, export_format)
    if export_format == "hub":
        from selfsup.export.hub import write_hub_folder

        return write_hub_folder(loaded, checkpoint, path)
    suffix = SUFFIXES[export_format]
    if path.suffix != suffix:
        raise ConfigError(f"--output {path}: the {export_format} format writes a {suffix} file; "
                          f"name it {path.with_suffix(suffix).name}")
    if export_format in LIBRARIES and export_format not in working_libraries(loaded):
        try:
            library_model(loaded, export_format)
        except ConfigError as err:
            raise ConfigError(f"--format {export_format}: {err}; formats that work: "
                              f"{', '.join(formats_that_work(loaded))}") from None
    writer = {"safetensors": _write_safetensors, "torchvision": _write_library, "timm": _write_library,
              "onnx": _write_onnx, "torchscript": _write_torchscript}[export_format]
    meta = stored_metadata(checkpoint)
    library, load, max_abs_diff = writer(loaded, export_format, path, input_spec(loaded, meta)["input_size"])
    config_path = path.with_suffix(".json")
    config = export_config(loaded, checkpoint, meta, export_format, path.name, library, load)
    write_json(config, config_path)
    return ExportResult(path, config_path, load, max_abs_diff)


# --------------------------------------------------------------------------- the formats
def _write_safetensors(loaded: LoadedEncoder, export_format: str, path: Path, input_size: list[int]):
    state = loaded.encoder.state_dict()
    write_safetensors(state, path)
    load = f'from selfsup.evaluation import load_encoder; encoder = load_encoder("{path}").encoder'
    return None, load, 0.0


def _write_library(loaded: LoadedEncoder, export_format: str, path: Path, input_size: list[int]):
    model = library_model(loaded, export_format)
    max_abs_diff = check_same_features(loaded, model.build(), f"the {export_format} model", input_size)
    write_safetensors(model.state_dict, path)
    library = {"name": export_format, "architecture": model.architecture, "create_args": model.create_args}
    return library, model.snippet(str(path)), max_abs_diff


def _write_onnx(loaded: LoadedEncoder, export_format: str, path: Path, input_size: list[int]):
    example = example_input(input_size, batch=2)  # batch 2: torch.export specialises a batch of 1

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(loaded.encoder, (example,), str(tmp), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)

    try:
        atomic_write_to(path, write)
    except ImportError as err:
        raise ConfigError(f"--format onnx needs the export extra: pip install 'selfsup[export]' ({err})") from None
    max_abs_diff = float("nan")
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        max_abs_diff = check_same_features(
            loaded, lambda x: torch.from_numpy(session.run(None, {ONNX_INPUT: x.numpy()})[0]), "the ONNX graph", input_size)
    except ImportError:
        pass  # onnxruntime (the export extra) checks the graph when it is installed
    load = (f'import onnxruntime; session = onnxruntime.InferenceSession("{path}"); '
            f'features = session.run(None, {{"{ONNX_INPUT}": images}})[0]')
    return None, load, max_abs_diff


def _write_torchscript(loaded: LoadedEncoder, export_format: str, path: Path, input_size: list[int]):
    example = example_input(input_size, batch=2)
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export; trace warns per shape op
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(loaded.encoder, example, check_trace=False)
        atomic_write_to(path, lambda tmp: torch.jit.save(traced, str(tmp)))
        reloaded = torch.jit.load(str(path))
    max_abs_diff = check_same_features(loaded, reloaded, "the TorchScript module", input_size)
    return None, f'import torch; model = torch.jit.load("{path}").eval()', max_abs_diff


# --------------------------------------------------------------------------- helpers
def example_input(input_size: list[int], batch: int, seed: int = 0) -> torch.Tensor:
    """A random normalised batch ``(B, C, S, S)`` for inputs of ``input_size`` ``[C, S, S]``."""
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def check_same_features(loaded: LoadedEncoder, other: Callable[[torch.Tensor], torch.Tensor], what: str,
                        input_size: list[int]) -> float:
    """Max abs difference between ``other``'s and the selfsup encoder's features; raise past TOLERANCE."""
    x = example_input(input_size, batch=3, seed=1)  # another batch size than the traced one
    if isinstance(other, nn.Module):
        other.eval()
    expected = loaded.encoder.eval()(x)
    actual = other(x)
    diff = float((actual - expected).abs().max()) if actual.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE:
        raise SelfSupError(f"{what} does not reproduce the encoder's features (max abs difference {diff:.3g} > "
                           f"{TOLERANCE:g}); nothing was written")
    return diff


def write_safetensors(state: Dict[str, torch.Tensor], path: Path, metadata: Optional[Dict[str, str]] = None) -> None:
    """A state dict as a safetensors file (contiguous CPU copies; tied tensors are stored once each)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write_to(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def write_json(payload: Dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["EXPORT_FORMATS", "ExportResult", "LibraryModel", "default_output", "export_encoder_as",
           "formats_that_work", "library_model"]
