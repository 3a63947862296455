"""Typed training configuration: dataclasses, filled from a YAML recipe, overridden from the CLI.

A recipe is a YAML file whose keys mirror :class:`TrainConfig`; nested groups use nested
mappings (``optim: {lr: 0.3}``) and ``--set optim.lr=0.3`` reaches the same field. Unknown keys
and values of the wrong type are rejected with a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from selfsup.errors import ConfigError

DEFAULT_BACKBONE = "resnet18-tiny"


@dataclass
class OptimConfig:
    name: str = "lars"
    """Optimizer: 'lars' (large batches, SimCLR/BYOL), 'sgd' or 'adamw' (ViTs)."""
    lr: float = 0.3
    """Base learning rate for a batch of 256; scaled by `lr_scaling` with the global batch."""
    lr_scaling: str = "linear"
    """'linear' (lr·B/256), 'sqrt' (lr·sqrt(B/256), SimCLR App. B.1 for small batches) or 'none'."""
    weight_decay: float = 1e-6
    """SimCLR: 1e-6 with LARS; 5e-4 with SGD on CIFAR; 0.05 with AdamW for ViTs."""
    weight_decay_end: Optional[float] = None
    """When set, weight decay follows a cosine from `weight_decay` to this value (DINO: 0.04 -> 0.4)."""
    momentum: float = 0.9
    betas: Tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 10.0
    """Linear warm-up length (SimCLR: 10 epochs), then cosine decay to `min_lr`."""
    min_lr: float = 0.0
    exclude_bias_and_norm: bool = True
    """No weight decay and no LARS adaptation for biases and normalisation parameters."""
    trust_coefficient: float = 0.001
    """LARS η (You et al. 2017); 0.001 as in SimCLR."""
    probe_lr: float = 0.1
    """Learning rate of the online linear probe (its own group, no weight decay)."""
    gradient_clip: float = 0.0
    """Clip the global gradient norm to this value (0 = off; DINO uses 3.0)."""


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    """'cpu', 'gpu' or 'auto'."""
    devices: Union[int, str] = "auto"
    """Devices per node (an int, or 'auto'); >1 runs DDP."""
    num_nodes: int = 1
    strategy: str = "auto"
    """'auto', 'ddp', 'ddp_spawn' …; under torchrun Lightning picks up the launched processes."""
    precision: str = "32-true"
    """'32-true', 'bf16-mixed' (GPUs with bf16, recent CPUs), '16-mixed' (GPUs) or 'auto': on CPUs with
    native bf16 (AVX512_BF16/AMX/Arm BF16) bf16-mixed where a short probe of the backbone measures it
    faster (selfsup.ops.precision), else 32-true; 32-true on GPUs."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across processes (SimCLR's global BN, Sec. 2)."""
    channels_last: bool = True
    """NHWC memory format for convolutional backbones (measured faster on CPU and GPU)."""
    log_every_n_steps: int = 20
    progress_bar: bool = True
    limit_train_batches: Optional[int] = None
    """Stop each epoch after this many batches (quick experiments and tests)."""
    deterministic: bool = False
    logger: List[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    """Where metrics go, in <output_dir>: any of csv, tensorboard, wandb (offline unless WANDB_MODE is
    set; pip install 'selfsup[wandb]'), mlflow (file store unless MLFLOW_TRACKING_URI is set; 'selfsup[mlflow]')."""
    keep_checkpoints: int = 3
    """Epoch checkpoints kept besides last.ckpt: the N most recent (-1: every epoch's, 0: last.ckpt only)."""
    compile: Union[bool, str] = False
    """torch.compile the method (backbone, heads, loss): false, true (mode 'default'),
    'reduce-overhead' (CUDA graphs: less per-step launch overhead for small models on a GPU) or
    'max-autotune'. The first steps compile (seconds to minutes); anything it cannot compile runs eagerly."""


LOGGER_CHOICES = ("csv", "tensorboard", "wandb", "mlflow")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CpuConfig:
    """CPU speed-ups (selfsup.ops); ignored on GPU runs."""

    convolution: str = "auto"
    """3×3 stride-1 convolutions of float32 CPU steps: 'auto' times Winograd F(4×4, 3×3) against PyTorch's
    direct kernel per layer shape at the first step and keeps the faster (cached per machine), 'winograd'
    always where it applies (same results up to float32 rounding; built with the system C compiler at
    first use, direct if there is none), 'direct' leaves every convolution to PyTorch."""
    allocator: str = "tuned"
    """'tuned': `selfsup train`/`eval` keep freed tensor memory in the heap for the next step instead of
    returning it to the kernel (glibc mallopt, selfsup.ops.allocator); 'system' leaves malloc alone.
    Applied by the command line, never by the library function train()."""


LEGACY_KEYS = {("trainer", "cpu_allocator"): ("cpu", "allocator"), ("trainer", "cpu_convolution"): ("cpu", "convolution")}
"""Keys of earlier versions → their place now, so that configs stored in old checkpoints still load."""


def upgrade_legacy_keys(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` with the keys of :data:`LEGACY_KEYS` moved to where they live now (an explicit new key wins)."""
    out = dict(values)
    for (old_group, old_key), (new_group, new_key) in LEGACY_KEYS.items():
        group = out.get(old_group)
        if isinstance(group, Mapping) and old_key in group:
            group = dict(group)
            value = group.pop(old_key)
            out[old_group] = group
            target = dict(out.get(new_group) or {})
            target.setdefault(new_key, value)
            out[new_group] = target
    return out


@dataclass
class MonitorConfig:
    online_probe: bool = True
    """Train a linear classifier on detached features while pre-training (needs labels)."""
    knn_every: int = 1
    """Compute kNN accuracy every N epochs on a labelled subset (0 = never)."""
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_train_samples: int = 10000
    """Size of the memory bank of training images used by the epoch-end kNN monitor."""
    knn_test_samples: int = 2000
    health_samples: int = 1024
    """Recent feature rows read by the epoch-end health metrics (RankMe, feature std, uniformity); 0 = off."""


@dataclass
class EvalConfig:
    """What `selfsup train` reports once training has finished."""

    knn: bool = True
    linear: bool = True
    floor: bool = True
    """Also evaluate a randomly initialised backbone of the same architecture (the floor)."""
    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_epochs: int = 100
    batch_size: int = 512
    memory_budget_gb: float = 4.0
    """Largest evaluation array held in RAM; larger features (ImageNet's) go to files beside the feature cache."""


@dataclass
class TrainConfig:
    method: str = "simclr"
    """Registered method name (`selfsup methods`)."""
    method_args: Dict[str, Any] = field(default_factory=dict)
    """The method's hyper-parameters, e.g. {temperature: 0.5}."""
    data: str = "fashion-mnist"
    """Dataset: fashion-mnist, cifar10, cifar100, stl10 or folder:PATH."""
    data_dir: Optional[str] = None
    split: str = "train"
    eval_data: Optional[str] = None
    """Labelled dataset used for kNN/linear evaluation (default: `data`, or nothing if unlabelled)."""
    download: bool = False
    on_bad_image: str = "skip"
    """What an unreadable image file (truncated, empty, not an image, over 2^27 pixels) does:
    'skip' (replaced by the next readable image, warned about once, listed in <output_dir>/skipped.txt)
    or 'error' (stop with one line naming the file). `selfsup data check folder:PATH` lists them all."""
    backbone: str = DEFAULT_BACKBONE
    """Registered backbone name (`selfsup backbones`)."""
    backbone_args: Dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256
    """Per-process batch; the global batch is batch_size × processes."""
    num_workers: int = 2
    augment: str = "auto"
    """Where views are made: 'batched' (whole uint8 batches on the training device — GPU when
    present — with tensor ops; needs equal-size images), 'per-image' (torchvision per image in
    DataLoader workers; any image sizes), 'split' (crop and flip per image in the workers, colour
    ops batched on the training device; any image sizes) or 'auto' (batched for in-memory datasets,
    split for image folders, per-image otherwise)."""
    output_dir: Optional[str] = None
    """Checkpoints, logs and results go here (default: runs/<method>-<data>)."""
    seed: int = 0
    views: Dict[str, Any] = field(default_factory=dict)
    """Overrides of the method's augmentation preset (see selfsup.transforms.ViewConfig)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cpu: CpuConfig = field(default_factory=CpuConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.augment not in ("auto", "batched", "per-image", "split"):
            raise ConfigError(f"unknown augment '{self.augment}'; valid choices: auto, batched, per-image, split")
        compile_mode = self.trainer.compile
        if not isinstance(compile_mode, bool) and compile_mode not in COMPILE_MODES:
            raise ConfigError(f"unknown trainer.compile '{compile_mode}'; valid choices: false, true, "
                              f"{', '.join(COMPILE_MODES)}")
        if self.cpu.allocator not in ("tuned", "system"):
            raise ConfigError(f"unknown cpu.allocator '{self.cpu.allocator}'; valid choices: system, tuned")
        if self.cpu.convolution not in ("auto", "winograd", "direct"):
            raise ConfigError(f"unknown cpu.convolution '{self.cpu.convolution}'; valid choices: auto, direct, winograd")
        if self.on_bad_image not in ("skip", "error"):
            raise ConfigError(f"unknown on_bad_image '{self.on_bad_image}'; valid choices: error, skip")
        if self.optim.name not in ("lars", "sgd", "adamw"):
            raise ConfigError(f"unknown optimizer '{self.optim.name}'; valid choices: adamw, lars, sgd")
        if self.optim.lr_scaling not in ("linear", "sqrt", "none"):
            raise ConfigError(f"unknown lr_scaling '{self.optim.lr_scaling}'; valid choices: linear, none, sqrt")
        if self.optim.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.optim.lr}")
        if not self.eval.memory_budget_gb > 0:
            raise ConfigError(f"eval.memory_budget_gb must be > 0, got {self.eval.memory_budget_gb}")
        self.trainer.logger = _logger_list(self.trainer.logger)
        if self.trainer.keep_checkpoints < -1:
            raise ConfigError(f"trainer.keep_checkpoints must be >= -1 (-1 keeps every epoch's checkpoint), "
                              f"got {self.trainer.keep_checkpoints}")
        if not self.output_dir:
            self.output_dir = str(Path("runs") / f"{self.method}-{self.data.replace(':', '-').replace('/', '_')}")
        return self


def _logger_list(value: Any) -> List[str]:
    """``trainer.logger`` as a list: a YAML list, one name, or "csv,wandb"; [] or "none" = no logger."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"trainer.logger expects a list of names from {', '.join(LOGGER_CHOICES)}, got {value!r}")
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in LOGGER_CHOICES:
            raise ConfigError(f"unknown trainer.logger '{name}'; valid choices: {', '.join(LOGGER_CHOICES)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- building


def _field_types(cls: type) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated type, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"bad value {value!r} for '{key}'")
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"'{key}' expects a list of {len(args)} values, got {value!r}")
        item_types = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        return tuple(_coerce(v, t, key) for v, t in zip(value, item_types))
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' expects a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' expects a mapping of {annotation.__name__} fields, got {value!r}")
        return _build(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' expects true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' expects an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' expects a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' expects a string, got {value!r}")
    return value


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys{' in ' + prefix[:-1] if prefix else ''}: "
            f"{', '.join(sorted(types))}"
        )
    kwargs = {name: _coerce(value, types[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def _merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(assignment: str) -> Dict[str, Any]:
    """``"optim.lr=0.1"`` → ``{"optim": {"lr": 0.1}}``; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got '{assignment}'")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{assignment}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: Dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        def at(mark: Any) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        mark = err.problem_mark or err.context_mark
        where = f", {at(mark)}" if mark is not None else ""
        problem = err.problem or err.context or str(err).splitlines()[0]
        if err.problem and err.context:  # e.g. "while parsing a flow sequence" started elsewhere
            problem += f" ({err.context}{' at ' + at(err.context_mark) if err.context_mark else ''})"
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
    return dict(data)


def make_config(
    base: Optional[Mapping[str, Any]] = None,
    files: Sequence[Union[str, Path]] = (),
    overrides: Sequence[Mapping[str, Any]] = (),
) -> TrainConfig:
    """Defaults ← ``base`` ← each YAML file ← each override mapping, later winning."""
    merged: Dict[str, Any] = dict(base or {})
    for path in files:
        merged = _merge(merged, load_yaml(path))
    for update in overrides:
        merged = _merge(merged, update)
    return _build(TrainConfig, upgrade_legacy_keys(merged)).validate()


def config_help() -> List[Tuple[str, Any, str]]:
    """(key, default, doc) for every field, read from the attribute docstrings above."""
    import ast
    import inspect

    docs: Dict[str, str] = {}
    tree = ast.parse(inspect.getsource(__import__(__name__, fromlist=["x"])))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                        docs[f"{node.name}.{stmt.target.id}"] = str(nxt.value.value)
    rows: List[Tuple[str, Any, str]] = []

    def walk(cls: type, obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), value, prefix + f.name + ".")
            else:
                rows.append((prefix + f.name, value, docs.get(f"{cls.__name__}.{f.name}", "")))

    walk(TrainConfig, TrainConfig(), "")
    return rows


RECIPES = Path(__file__).parent / "configs"
"""The packaged recipes: ``configs/<dataset>/<method>.yaml``."""


# The method `selfsup train` runs when none is given, per dataset (SimCLR elsewhere). On
# Fashion-MNIST it is the winner of the accuracy-per-CPU-minute study (BENCHMARKS.md,
# `python benchmarks/accuracy_per_minute.py`): in about five minutes of 2 CPU cores rotation
# prediction beats the raw pixels on kNN and linear, while SimCLR, VICReg and E-SSL stay below them.
DEFAULT_METHODS: Dict[str, str] = {"fashion-mnist": "rotation"}


def default_method(data: str) -> str:
    """The method of the default job on ``data``: its study winner, else TrainConfig's (SimCLR)."""
    return DEFAULT_METHODS.get(data.split(":")[0], TrainConfig.method)


def recipe_path(data: str, method: str) -> Optional[Path]:
    """The packaged recipe ``configs/<dataset>/<method>.yaml`` if there is one."""
    path = RECIPES / data.split(":")[0] / f"{method}.yaml"
    return path if path.is_file() else None
