"""``selfsup export``: every format rebuilds the encoder's features (timm/torchvision models from
the printed load line, ONNX through onnxruntime, TorchScript loaded back), the JSON says what the
encoder is, backbones without an equivalent are refused in one line, and Hub folders load in timm."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.errors import ConfigError, SelfSupError
from selfsup.evaluation import export_encoder, load_encoder
from selfsup.export import export_encoder_as

TOLERANCE = 1e-5
INFO = {"name": "folder:x", "num_channels": 1, "num_classes": 3, "image_size": 32, "mean": [0.5], "std": [0.25],
        "classes": ["a", "b", "c"]}


def fake_run(tmp_path, backbone: str, args: dict, channels: int = 1, evaluated: bool = True):
    """A training checkpoint as `selfsup train` writes it (random weights, no training) and its eval.json."""
    torch.manual_seed(0)
    net = build_backbone(backbone, in_channels=channels, **args)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode export is exercised
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    config = {"method": "simclr", "method_args": {}, "data": "folder:x", "epochs": 3, "batch_size": 8, "seed": 0,
              "backbone": backbone, "backbone_args": args, "views": {"image_size": 32}, "output_dir": str(tmp_path)}
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"method.backbone.{k}": v for k, v in net.state_dict().items()},
                "selfsup": {"config": config, "dataset_info": dict(INFO, num_channels=channels)}}, checkpoint)
    if evaluated:
        (tmp_path / "eval.json").write_text(json.dumps({
            "data": "folder:x", "checkpoint": str(checkpoint), "protocols": ["knn"],
            "trained": {"knn_top1": 0.75, "feature_dim": 128.0}, "random_init": {"knn_top1": 0.5}}))
    return checkpoint


def features(model, x):
    with torch.no_grad():
        return model.eval()(x)


def from_snippet(line: str):
    namespace: dict = {}
    exec(line, namespace)  # the printed load line, as a user would paste it
    return namespace.get("model") or namespace["encoder"]


@pytest.mark.parametrize("backbone, args, channels, library", [
    ("resnet18", {}, 3, "torchvision"),
    ("vit-tiny", {"image_size": 32, "patch_size": 8, "depth": 2}, 3, "torchvision"),
    ("resnet18", {}, 1, "timm"),
    ("vit-tiny", {"image_size": 32, "patch_size": 8, "depth": 2}, 3, "timm"),
    ("timm:resnet10t", {}, 1, "timm"),
    ("timm:vit_tiny_patch16_224", {"image_size": 32, "model_args": {"depth": 2}}, 3, "timm"),
])
def test_library_export_gives_the_same_features(tmp_path, backbone, args, channels, library):
    checkpoint = fake_run(tmp_path, backbone, args, channels)
    result = export_encoder_as(str(checkpoint), library, tmp_path / "out" / "encoder.safetensors")
    x = torch.randn(4, channels, 32, 32)
    expected = features(load_encoder(str(checkpoint)).encoder, x)
    model = from_snippet(result.load)
    assert type(model).__module__.split(".")[0] == library  # a plain library model, not selfsup's
    assert (features(model, x) - expected).abs().max() <= TOLERANCE
    config = json.loads(result.config_path.read_text())
    assert config["library"]["name"] == library and config["backbone"] == backbone
    assert config["input_size"] == [channels, 32, 32] and config["mean"] == [0.5] and config["std"] == [0.25]
    assert config["feature_dim"] == expected.shape[1] and config["method"] == "simclr"
    assert config["training"]["data"] == "folder:x" and config["eval"]["trained"]["knn_top1"] == 0.75


def test_safetensors_export_is_read_back_by_load_encoder_and_eval(tmp_path):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    result = export_encoder_as(str(checkpoint))  # the default: safetensors beside the checkpoint
    assert result.path == tmp_path / "encoder.safetensors" and result.config_path == tmp_path / "encoder.json"
    x = torch.randn(3, 1, 32, 32)
    reloaded = load_encoder(str(result.path))
    assert reloaded.backbone == "resnet18-tiny" and reloaded.config["views"]["image_size"] == 32
    assert torch.equal(features(reloaded.encoder, x), features(load_encoder(str(checkpoint)).encoder, x))
    assert torch.equal(features(from_snippet(result.load), x), features(reloaded.encoder, x))
    config = json.loads(result.config_path.read_text())
    assert config["std"] == [0.25] and config["eval"]["random_init"] == {"knn_top1": 0.5}


def test_the_old_encoder_format_still_loads_and_exports(tmp_path):
    old = export_encoder(load_encoder("random", "resnet18-tiny", {}, in_channels=1), tmp_path / "enc.pt")
    result = export_encoder_as(str(old), "safetensors", tmp_path / "enc.safetensors")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(features(load_encoder(str(old)).encoder, x), features(load_encoder(str(result.path)).encoder, x))
    assert json.loads(result.config_path.read_text())["eval"] is None  # no run beside it


def test_eval_numbers_of_another_checkpoint_are_not_copied(tmp_path):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    other = tmp_path / "epoch-1.ckpt"
    other.write_bytes(checkpoint.read_bytes())
    result = export_encoder_as(str(other), "safetensors", tmp_path / "e1.safetensors")
    assert json.loads(result.config_path.read_text())["eval"] is None


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_a_backbone_without_equivalent_is_refused_in_one_line(tmp_path, library):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    with pytest.raises(ConfigError) as info:
        export_encoder_as(str(checkpoint), library, tmp_path / "x.safetensors")
    message = str(info.value)
    assert "\n" not in message and "small stem" in message
    assert "formats that work: safetensors, onnx, torchscript, hub" in message
    assert not (tmp_path / "x.safetensors").exists()


def test_wrong_suffix_and_format_are_one_line_errors(tmp_path):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    with pytest.raises(ConfigError, match="name it encoder.onnx"):
        export_encoder_as(str(checkpoint), "onnx", tmp_path / "encoder.pt")
    with pytest.raises(ConfigError, match="valid formats: safetensors"):
        export_encoder_as(str(checkpoint), "keras")


@pytest.mark.parametrize("backbone, args", [("resnet18-tiny", {}),
                                            ("vit-tiny", {"image_size": 32, "patch_size": 8, "depth": 2})])
def test_onnx_export_runs_in_onnxruntime(tmp_path, backbone, args):
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime (the export extra) is not installed")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript (the export extra)")
    checkpoint = fake_run(tmp_path, backbone, args)
    result = export_encoder_as(str(checkpoint), "onnx", tmp_path / "encoder.onnx")
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 32, 32)  # another batch size than the export's example
    out = session.run(None, {"images": x.numpy()})[0]
    expected = features(load_encoder(str(checkpoint)).encoder, x)
    assert (torch.from_numpy(out) - expected).abs().max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_back(tmp_path):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    result = export_encoder_as(str(checkpoint), "torchscript", tmp_path / "encoder.pt")
    x = torch.randn(5, 1, 32, 32)
    scripted = torch.jit.load(str(result.path))
    assert (features(scripted, x) - features(load_encoder(str(checkpoint)).encoder, x)).abs().max() <= TOLERANCE


def test_hub_folder_loads_in_timm_and_its_card_has_the_numbers(tmp_path):
    import timm

    checkpoint = fake_run(tmp_path, "vit-tiny", {"image_size": 32, "patch_size": 8, "depth": 2})
    result = export_encoder_as(str(checkpoint), "hub", tmp_path / "hub")
    assert {p.name for p in result.path.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((result.path / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["pretrained_cfg"]["mean"] == [0.5]
    card = (result.path / "README.md").read_text()
    assert "library_name: timm" in card and "75.00 %" in card and "50.00 %" in card and "simclr" in card
    if tuple(int(p) for p in timm.__version__.split(".")[:3]) < (1, 0, 16):
        pytest.skip(f"timm {timm.__version__} has no local-dir: model source (timm >= 1.0.16)")
    model = timm.create_model(f"local-dir:{result.path}", pretrained=True)
    x = torch.randn(2, 1, 32, 32)
    assert (features(model, x) - features(load_encoder(str(checkpoint)).encoder, x)).abs().max() <= TOLERANCE


def test_hub_folder_without_timm_equivalent_loads_in_selfsup(tmp_path):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    result = export_encoder_as(str(checkpoint), "hub", tmp_path / "hub")
    assert "library_name: selfsup" in (result.path / "README.md").read_text()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(features(from_snippet(result.load), x), features(load_encoder(str(checkpoint)).encoder, x))


def test_push_offline_fails_with_one_line(tmp_path, monkeypatch, capsys):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["export", "--checkpoint", str(checkpoint), "--push-to", "someone/encoder"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "HF_HUB_OFFLINE" in err and "huggingface-cli upload" in err
    assert (tmp_path / "hub" / "model.safetensors").is_file()  # the folder is ready to push later


def test_cli_export_prints_the_load_line_and_refuses_in_one_line(tmp_path, capsys):
    checkpoint = fake_run(tmp_path, "resnet18-tiny", {})
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "load: import torch; model = torch.jit.load(" in out and (tmp_path / "encoder.json").is_file()
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "timm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfsup: error: --format timm:") and err.count("\n") == 1


def fake_method_run(tmp_path, method: str, backbone: str, args: dict, method_args: dict):
    """A training checkpoint of ``method`` whose encoder is more than its student backbone."""
    from selfsup.data import DatasetInfo
    from selfsup.methods import DataSpec, build_backbone_for, build_method

    torch.manual_seed(0)
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in INFO.items()})
    net = build_backbone_for(method, backbone, args, 1, method_args)
    model = build_method(method, net, method_args, DataSpec(info, 10))
    config = {"method": method, "method_args": method_args, "data": "folder:x", "epochs": 1, "batch_size": 8,
              "seed": 0, "backbone": backbone, "backbone_args": args, "views": {"image_size": 32}}
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"method.{k}": v for k, v in model.state_dict().items()},
                "selfsup": {"config": config, "dataset_info": INFO, "num_samples": 10}}, checkpoint)
    return checkpoint


def test_a_teacher_encoder_exports_to_timm_and_a_wrapping_encoder_is_refused(tmp_path):
    vit = {"image_size": 32, "patch_size": 8, "depth": 2}
    ibot = fake_method_run(tmp_path, "ibot", "vit-tiny", vit, {"out_dim": 32, "patch_out_dim": 32,
                                                                "head_hidden_dim": 16, "head_bottleneck_dim": 8})
    result = export_encoder_as(str(ibot), "timm", tmp_path / "ibot.safetensors")  # iBOT's encoder: the teacher ViT
    x = torch.randn(2, 1, 32, 32)
    expected = features(load_encoder(str(ibot)).encoder, x)
    assert (features(from_snippet(result.load), x) - expected).abs().max() <= TOLERANCE

    (tmp_path / "cpc").mkdir()
    cpc = fake_method_run(tmp_path / "cpc", "cpc", "resnet18-tiny", {}, {})
    with pytest.raises(ConfigError, match="the cpc encoder wraps its backbone .*formats that work: safetensors"):
        export_encoder_as(str(cpc), "timm", tmp_path / "cpc.safetensors")
    kept = export_encoder_as(str(cpc), "safetensors", tmp_path / "cpc.safetensors")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(features(load_encoder(str(kept.path)).encoder, x), features(load_encoder(str(cpc)).encoder, x))


def test_an_export_that_changes_the_features_is_not_written(tmp_path, monkeypatch):
    from selfsup.export.library import LibraryModel

    checkpoint = fake_run(tmp_path, "resnet18", {}, channels=3)
    build = LibraryModel.build

    def off_by_a_little(self):
        model = build(self)
        with torch.no_grad():
            model.layer4[1].bn2.bias.add_(1e-2)  # e.g. a key mapped to the wrong tensor
        return model

    monkeypatch.setattr(LibraryModel, "build", off_by_a_little)
    with pytest.raises(SelfSupError, match="does not reproduce the encoder's features"):
        export_encoder_as(str(checkpoint), "torchvision", tmp_path / "tv.safetensors")
    assert not (tmp_path / "tv.safetensors").exists() and not (tmp_path / "tv.json").exists()
