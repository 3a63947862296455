import pytest

from selfsup.config import TrainConfig, config_help, load_yaml, make_config, parse_override
from selfsup.errors import ConfigError


def test_overrides_reach_nested_fields_with_types():
    cfg = make_config(overrides=[parse_override("optim.lr=0.05"), parse_override("epochs=3"),
                                 parse_override("views.crop_scale=[0.2, 1.0]"), parse_override("trainer.devices=2")])
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 3 and cfg.trainer.devices == 2
    assert cfg.views == {"crop_scale": [0.2, 1.0]}


def test_exponent_without_dot_is_a_number():
    assert make_config(overrides=[parse_override("optim.lr=1e-3")]).optim.lr == 1e-3


def test_yaml_then_overrides_later_wins(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 7\noptim: {lr: 0.2, name: sgd}\n")
    cfg = make_config(files=[path], overrides=[parse_override("optim.lr=0.4")])
    assert (cfg.epochs, cfg.optim.name, cfg.optim.lr) == (7, "sgd", 0.4)


@pytest.mark.parametrize("assignment, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("epoch=1", "unknown config key 'epoch'"),
    ("epochs=abc", "'epochs' expects an integer"),
    ("epochs=0", "epochs must be a positive integer"),
    ("optim.name=adam", "unknown optimizer 'adam'"),
    ("trainer.channels_last=maybe", "expects true or false"),
])
def test_bad_keys_and_values_give_one_line_errors(assignment, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_config(overrides=[parse_override(assignment)])
    assert "\n" not in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(bad)


def test_default_output_dir_and_help():
    assert make_config().output_dir.endswith("simclr-fashion-mnist")
    keys = {row[0] for row in config_help()}
    assert {"optim.lr", "trainer.precision", "monitor.knn_k", "epochs"} <= keys
    assert all(doc for key, _, doc in config_help() if key == "optim.lr")


def test_packaged_recipes_are_valid():
    from selfsup.config import RECIPES

    recipes = sorted(RECIPES.glob("*/*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        assert isinstance(make_config(files=[recipe]), TrainConfig)
