"""Every shipped config resolves and passes validation (typos fail here, not on a pod)."""

import importlib.util
import pathlib

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
