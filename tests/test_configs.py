"""Every shipped config resolves and passes validation (typos fail here, not on a pod)."""

import importlib.util
import pathlib
import re

import pytest

from ptft_jax.config import validate

CONFIGS = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid_and_documents_its_command(path):
    module = _load(path)
    assert "python -m ptft_jax.train --config configs/" in module.__doc__
    for arg in getattr(module, "TASKS", {None: None}):
        validate(module.get_config() if arg is None else module.get_config(arg))


@pytest.mark.parametrize(
    "model,message",
    [
        ({"attention": "flash"}, "model.attention='flash' is unknown; use auto, xla or cudnn."),
        ({"remat_policy": "some"}, "model.remat_policy='some' is unknown; use full or dots."),
        ({"attention": "cudnn"}, "needs model.dtype='bfloat16'"),
        ({"attention": "cudnn", "dtype": "bfloat16", "num_attention_heads": 64}, "multiple of 8"),
    ],
)
def test_attention_and_remat_choices_are_checked(model, message):
    from ptft_jax.config import ConfigError, base_config

    cfg = base_config()
    cfg.model.update(model)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)
    cfg.model.update(
        attention="cudnn", dtype="bfloat16", num_attention_heads=12, remat_policy="dots"
    )
    validate(cfg)


def test_a_dropout_rate_on_the_command_line_wins_over_init_from():
    """Dropout is a training choice: fine-tuning may add it to a run pretrained without; the
    checkpoint's shape still wins over the config, and a contradicting shape still stops."""
    from ptft_jax.config import ConfigError, apply_checkpoint_model, base_config

    cfg = base_config()
    cfg.init_from, cfg.model.hidden_dropout_prob = "runs/zh_mlm", 0.1
    fields = {"hidden_dropout_prob": 0.0, "hidden_size": 256}
    out = apply_checkpoint_model(cfg, fields, "tok", ("hidden_dropout_prob",))
    assert out.model.hidden_dropout_prob == 0.1 and out.model.hidden_size == 256
    assert apply_checkpoint_model(cfg, fields, "tok").model.hidden_dropout_prob == 0.0
    cfg.model.hidden_size = 64
    with pytest.raises(ConfigError, match="--config.model.hidden_size=64 contradicts init_from"):
        apply_checkpoint_model(cfg, fields, "tok", ("hidden_size",))


def test_a_classifier_head_option_on_the_command_line_wins_over_init_from():
    """The classifier head is new when fine-tuning starts from a pretraining run: its options
    (ModernBERT's pooling) are the fine-tuning's choice, not the checkpoint's."""
    from ptft_jax.config import apply_checkpoint_model, base_config

    cfg = base_config()
    cfg.init_from, cfg.model.classifier_pooling = "runs/quickstart", "mean"
    fields = {"classifier_pooling": "cls", "family": "modernbert", "hidden_size": 128}
    out = apply_checkpoint_model(cfg, fields, "tok", ("classifier_pooling",))
    assert out.model.classifier_pooling == "mean" and out.model.hidden_size == 128
    assert apply_checkpoint_model(cfg, fields, "tok").model.classifier_pooling == "cls"
