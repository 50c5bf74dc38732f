"""A workdir's files: written when a run starts (config, tokenizer, label names), and read
back (with the latest or best parameters) by export, predict, evaluate and plot."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import ml_collections

from ptft_jax import checkpoint, config, optim, sharding, steps, tasks
from ptft_jax.data.tokenize import load_tokenizer, save_tokenizer


@dataclasses.dataclass
class Run:
    """What export, predict and evaluate need from a workdir."""

    cfg: ml_collections.ConfigDict
    model_cfg: object
    tokenizer: object
    params: dict
    step: int
    mesh: object
    path: pathlib.Path

    @property
    def task(self):
        """The run's task (``tasks/``), configured as it trained."""
        return tasks.get(self.cfg)

    def label_names(self) -> list[str]:
        """Class names: the run's string labels (``W/labels.json``) or "0".."C-1"."""
        path = self.path / "labels.json"
        if path.exists():
            return json.loads(path.read_text())["names"]
        return [str(i) for i in range(self.model_cfg.num_labels)]


def load(workdir: str | pathlib.Path) -> Run:
    """The run's config and parameters on this machine's devices: the best checkpoint when
    the run keeps one (classification), else the latest."""
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise config.ConfigError(
            f"--workdir {workdir} does not exist; pass the --workdir of a training run."
        )
    if not checkpoint.has_checkpoint(workdir) or not (workdir / "config.json").exists():
        raise config.ConfigError(
            f"{workdir} holds no finished checkpoint; train into it first (train.steps=0 with "
            "init_from writes a step-0 checkpoint)."
        )
    cfg = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    model_cfg = config.model_config(cfg)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    tx, _ = optim.make_optimizer(
        cfg.train, max(cfg.train.steps, 1), cfg.model.get("family", "bert")
    )
    head = tasks.get(cfg).head
    state_sh = sharding.named(mesh, steps.state_specs(model_cfg, head, tx, mesh))
    init_fn = steps.make_init_fn(model_cfg, head, tx, mesh, 0)
    abstract = checkpoint.abstract_like(jax.eval_shape(init_fn), state_sh)
    mgr = checkpoint.manager(workdir, cfg.train.keep_checkpoints)
    step = mgr.latest_step()
    try:
        state, _, _ = checkpoint.restore_checked(mgr, step, abstract)
    except checkpoint.DamagedError as e:
        raise checkpoint.DamagedError(
            f"In {workdir}, {e}; run its train command once to set it aside and resume from "
            "the one before."
        ) from None
    mgr.close()
    params = state["params"]
    if (workdir / "best").is_dir():
        # Classification keeps its best checkpoint apart: that is the model to use.
        best = checkpoint.manager(workdir, 1, "best")
        if best.latest_step() is not None:
            step = best.latest_step()
            params = checkpoint.restore_params(best, params)
        best.close()
    tokenizer = load_tokenizer(str(workdir / "tokenizer"))
    return Run(cfg, model_cfg, tokenizer, params, int(step), mesh, workdir)


def write_run_files(path: pathlib.Path, cfg, tokenizer, label_names, resuming: bool) -> None:
    """``W/tokenizer``, ``W/labels.json`` (string labels) and ``W/config.json``, from process 0;
    a resumed run keeps the tokenizer and config it started with."""
    if jax.process_index() != 0:
        return
    if not (resuming and (path / "tokenizer").exists()):
        save_tokenizer(tokenizer, path / "tokenizer")
    if label_names is not None:
        (path / "labels.json").write_text(json.dumps({"names": label_names}) + "\n")
    if not resuming:
        config.save(cfg, path / "config.json")
