"""The command line: contract, JSON outputs, one-line errors."""

import json

import pytest

from selfsup.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = ["--set", "backbone_args={small_stem: true, width: 0.125}", "--set", "views.image_size=16",
        "--set", "method_args={projection_hidden_dim: 32, projection_dim: 16}",
        "--set", "trainer.progress_bar=false", "--set", "optim.warmup_epochs=0",
        "--set", "monitor.knn_every=0", "--set", "eval.linear_epochs=5", "--set", "eval.knn_k=5"]


def test_lists(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "simclr" in out
    code, out, _ = run(capsys, "backbones")
    assert code == 0 and "resnet18" in out and "vit-small" in out


def test_train_help_explains_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "optim.lr = 0.3" in out and "--resume" in out
    assert "LARS" in out  # the docs of the keys come along


def test_train_then_eval_and_export(capsys, shapes_folder, tmp_path):
    out_dir = tmp_path / "run"
    data = f"folder:{shapes_folder}"
    code, out, err = run(capsys, "train", "--data", data, "--backbone", "resnet18", "--epochs", "1",
                         "--batch-size", "8", "--num-workers", "0", "--output-dir", str(out_dir), *TINY)
    assert code == 0, err
    assert (out_dir / "last.ckpt").is_file()
    report = json.loads((out_dir / "eval.json").read_text())
    assert {"knn_top1", "linear_top1"} <= set(report["trained"]) and "random_init" in report
    assert "random init (floor)" in out

    knn_json = tmp_path / "knn.json"
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", str(out_dir / "last.ckpt"), "--data", data,
                       "--output", str(knn_json), "--k", "5", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert 0.0 <= json.loads(knn_json.read_text())["knn_top1"] <= 1.0

    lin_json = tmp_path / "linear.json"
    code, _, err = run(capsys, "eval", "linear", "--checkpoint", "random", "--backbone", "resnet18",
                       "--set", "small_stem=true", "--set", "width=0.125", "--data", data,
                       "--output", str(lin_json), "--epochs", "5")
    assert code == 0, err
    assert 0.0 <= json.loads(lin_json.read_text())["linear_top1"] <= 1.0

    exported = tmp_path / "encoder.safetensors"
    assert run(capsys, "export", "--checkpoint", str(out_dir / "last.ckpt"), "--output", str(exported))[0] == 0
    payload = json.loads((tmp_path / "encoder.json").read_text())
    assert payload["backbone"] == "resnet18" and payload["in_channels"] == 1
    assert payload["eval"]["trained"]["knn_top1"] == report["trained"]["knn_top1"]  # the run's numbers come along
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", str(exported), "--data", data, "--k", "5")
    assert code == 0, err


def test_views_command_writes_png(capsys, shapes_folder, tmp_path):
    path = tmp_path / "views.png"
    code, out, err = run(capsys, "views", "--data", f"folder:{shapes_folder}", "--num-images", "3", "--output", str(path))
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["train", "--method", "nope"], "unknown method 'nope'; valid choices: .*simclr"),
    (["train", "--backbone", "resnet7", "--epochs", "1"], "unknown backbone 'resnet7'; valid choices"),
    (["train", "--data", "imagenet22k"], "unknown dataset 'imagenet22k'"),
    (["train", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["train", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["eval", "knn", "--checkpoint", "nowhere.ckpt"], "checkpoint 'nowhere.ckpt' does not exist"),
])
def test_bad_input_is_one_line_error(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("selfsup: error:")]
    assert len(lines) == 1, err
    import re
    assert re.search(message, lines[0]), lines[0]


def test_bad_folder_errors(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "train", "--data", f"folder:{empty}", "--output-dir", str(tmp_path / "r"))
    assert code == 2 and str(empty) in err


def test_resume_from_the_cli_extends_a_run(capsys, shapes_folder, tmp_path):
    out_dir = tmp_path / "run"
    common = ["--data", f"folder:{shapes_folder}", "--backbone", "resnet18", "--batch-size", "8",
              "--num-workers", "0", "--output-dir", str(out_dir), "--no-eval", *TINY]
    assert run(capsys, "train", "--epochs", "1", *common)[0] == 0
    code, _, err = run(capsys, "train", "--epochs", "1", *common)
    assert code == 2 and "already holds a run" in err
    code, out, err = run(capsys, "train", "--resume", "--epochs", "2", "--output-dir", str(out_dir),
                         "--set", "trainer.progress_bar=false")
    assert code == 0, err
    assert "for 2 epochs (12 steps)" in out
    code, _, err = run(capsys, "train", "--resume", "--output-dir", str(tmp_path / "nothing"))
    assert code == 2 and "no checkpoint" in err


def test_default_job_is_the_study_winner_per_dataset(tmp_path):
    """`selfsup train` alone runs the Fashion-MNIST recipe of the accuracy-per-minute study's winner;
    other data keep SimCLR; --method and a resumed run's own method win over the default."""
    from selfsup.cli import build_parser
    from selfsup.commands.train import build_train_config
    from selfsup.config import DEFAULT_METHODS, make_config, recipe_path

    def config(*argv):
        return build_train_config(build_parser().parse_args(["train", *argv]))

    for data, method in DEFAULT_METHODS.items():
        assert recipe_path(data, method) is not None, f"default {method} has no {data} recipe"
    default = config()
    assert default.method == "rotation" and default.data == "fashion-mnist"
    assert default == make_config(files=[recipe_path("fashion-mnist", "rotation")])  # the packaged recipe, as is
    assert config("--method", "simclr").method == "simclr"
    assert config("--data", f"folder:{tmp_path}").method == "simclr"
    assert config("--data", "cifar10").method == "simclr"
