"""Self-distillation (SimCLR v2, Eq. 2/3) and the `selfsup distill` command end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.apps.distill import (CLASSIFIER_FORMAT, Classifier, DistillationLoss, distillation_loss, labelled_subset,
                                  load_teacher)
from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.errors import DataError
from selfsup.io import load_torch_file

TINY = {"small_stem": True, "width": 0.125}


# ----------------------------------------------------------------------------- the loss
def test_distillation_loss_is_eq_2():
    torch.manual_seed(0)
    student, teacher, tau = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64), 2.0
    expected = 0.0
    for i in range(5):  # − Σ_y P_T(y|x; τ) log P_S(y|x; τ), averaged over the images
        z_t = sum(torch.exp(teacher[i, y] / tau) for y in range(4))
        z_s = sum(torch.exp(student[i, y] / tau) for y in range(4))
        expected -= sum(torch.exp(teacher[i, y] / tau) / z_t * torch.log(torch.exp(student[i, y] / tau) / z_s)
                        for y in range(4))
    torch.testing.assert_close(distillation_loss(student, teacher, tau), (expected / 5).float())


def test_distillation_gradient_reaches_the_student_only():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    # At its minimum the student matches the teacher's softened distribution: gradient zero.
    same = teacher.detach().clone().requires_grad_()
    distillation_loss(same, teacher.detach(), 1.5).backward()
    torch.testing.assert_close(same.grad, torch.zeros_like(same.grad))


def test_labelled_mixing_is_eq_3():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([2, -1, 0, -1])  # two labelled images
    loss = DistillationLoss(temperature=1.0, alpha=0.25)(student, teacher, labels)
    labelled = F.cross_entropy(student[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(loss, 0.75 * labelled + 0.25 * distillation_loss(student, teacher))
    # α = 1: labels are ignored.
    torch.testing.assert_close(DistillationLoss(alpha=1.0)(student, teacher, labels), distillation_loss(student, teacher))


def test_labelled_subset_is_class_balanced_and_reproducible():
    labels = torch.tensor([0] * 50 + [1] * 30 + [-1] * 20)
    subset = labelled_subset(labels, 0.1, seed=3)
    assert (labels[subset] == 0).sum() == 5 and (labels[subset] == 1).sum() == 3
    assert torch.equal(subset, labelled_subset(labels, 0.1, seed=3))
    assert (labels[labelled_subset(labels, 0.001)] >= 0).all() and len(labelled_subset(labels, 0.001)) == 2
    with pytest.raises(DataError, match="fraction 0"):
        labelled_subset(labels, 0.0)


def test_classifier_head_starts_at_zero():
    classifier = Classifier(build_backbone("resnet18", in_channels=1, **TINY), num_classes=3)
    logits = classifier(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 3) and torch.equal(logits, torch.zeros(2, 3))


# ----------------------------------------------------------------------------- teachers
def test_simclr2_training_checkpoint_gives_the_trunk_with_the_first_head_layer(tmp_path):
    from selfsup.config import make_config
    from selfsup.data import DatasetInfo
    from selfsup.engine.module import SelfSupervisedModule

    config = make_config(overrides=[{"method": "simclr2", "backbone": "resnet18", "backbone_args": TINY,
                                     "method_args": {"projection_hidden_dim": 24, "projection_dim": 8}}])
    info = DatasetInfo("shapes", 1, 2, 16, (0.5,), (0.5,))
    module = SelfSupervisedModule(config, info, num_samples=8)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")

    teacher = load_teacher(str(tmp_path / "last.ckpt"))
    assert teacher.trunk_spec["finetune_trunk"] and teacher.module.feature_dim == 24
    images = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = module.method.finetune_trunk().eval()(images)
        torch.testing.assert_close(teacher.module.eval()(images), expected)
    encoder_only = load_teacher(str(tmp_path / "last.ckpt"), use_finetune_trunk=False)
    assert encoder_only.module.feature_dim == module.method.backbone.feature_dim


# ----------------------------------------------------------------------------- the command
def exported_random_encoder(path):
    from selfsup.evaluation import export_encoder, load_encoder

    return export_encoder(load_encoder("random", "resnet18", TINY, in_channels=1, seed=0), path)


def test_distill_command_end_to_end(shapes_folder, tmp_path, capsys):
    encoder = exported_random_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "distill"
    common = ["--data", f"folder:{shapes_folder}", "--labels-fraction", "0.25", "--epochs", "1",
              "--batch-size", "16", "--image-size", "16", "--student-backbone", "resnet18",
              "--student-set", "small_stem=true", "--student-set", "width=0.125"]
    code = main(["distill", "--teacher", str(encoder), "--finetune-epochs", "1", "--output", str(out)] + common)
    assert code == 0
    report = json.loads((out / "distill.json").read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["labelled_images"] == 12  # 25 % of 24 images in each of 2 classes
    assert report["teacher"]["fine_tuned"] and report["teacher"]["trunk"] == "encoder"
    for role in ("teacher", "student"):
        assert 0.0 <= report[role]["top1"] <= 1.0
    assert report["student"]["backbone_args"] == TINY
    stored = load_torch_file(out / "teacher.pt", "a classifier file")  # the format loads weights-only
    assert stored["format"] == CLASSIFIER_FORMAT and stored["num_classes"] == 2 and stored["image_size"] == 16

    # The written teacher is a classifier file: used as it is, no fine-tuning, same accuracy.
    again = tmp_path / "again"
    assert main(["distill", "--teacher", str(out / "teacher.pt"), "--output", str(again)] + common) == 0
    second = json.loads((again / "distill.json").read_text())
    assert not second["teacher"]["fine_tuned"]
    assert second["teacher"]["top1"] == report["teacher"]["top1"]
    assert not (again / "teacher.pt").exists() and (again / "student.pt").is_file()


def test_distill_command_bad_inputs_are_one_line_errors(shapes_folder, tmp_path, capsys):
    encoder = exported_random_encoder(tmp_path / "encoder.pt")
    base = ["distill", "--data", f"folder:{shapes_folder}", "--output", str(tmp_path / "o")]
    assert main(base + ["--teacher", str(encoder), "--labels-fraction", "0"]) == 2
    assert "--labels-fraction=0.0 must be in (0, 1]" in capsys.readouterr().err
    assert main(base + ["--teacher", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt' does not exist" in err and len(err.strip().splitlines()) == 1
    torch.save({"something": 1}, tmp_path / "other.pt")
    assert main(base + ["--teacher", str(tmp_path / "other.pt")]) == 2
    assert "neither a selfsup training checkpoint" in capsys.readouterr().err
