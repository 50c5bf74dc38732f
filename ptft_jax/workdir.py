"""A workdir's files: written when a run starts (config, tokenizer, label names), and read
back (with the latest or best parameters) by export, predict, evaluate and plot."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax
import ml_collections
from jax.experimental import multihost_utils

from ptft_jax import checkpoint as ckpt
from ptft_jax import config, optim, recovery, sharding, steps, tasks
from ptft_jax.data.tokenize import load_run_tokenizer, save_tokenizer

log = logging.getLogger(__name__)


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
    checkpoint: str = "last"  # which was read: "best" (W/best), "last" or "kept" (older)
    last_step: int = -1  # the newest step of W/checkpoints

    def describe(self) -> str:
        """Which checkpoint the numbers come from, for an info line."""
        which = {"best": "the best", "last": "the last", "kept": "the kept"}[self.checkpoint]
        line = f"{self.path}: {which} checkpoint, step {self.step}"
        if self.checkpoint != "last":
            same = self.step == self.last_step
            line += " (also the last)" if same else f" (the last is step {self.last_step})"
        return line + "; --checkpoint best|last|STEP picks another"

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


def load(workdir: str | pathlib.Path, checkpoint: str | int | None = None) -> Run:
    """The run's config and parameters on this machine's devices, from ``checkpoint``:
    ``"best"`` (``W/best``, kept by runs that pick one by a metric, such as classification),
    ``"last"`` (the newest of ``W/checkpoints``), one of the kept steps there (an int or its
    digits), or None: the best when the run keeps one, else the last."""
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise config.ConfigError(
            f"--workdir {workdir} does not exist; pass the --workdir of a training run."
        )
    if not ckpt.has_checkpoint(workdir) or not (workdir / "config.json").exists():
        raise config.ConfigError(
            f"{workdir} holds no finished checkpoint; train into it first (train.steps=0 with "
            "init_from writes a step-0 checkpoint)."
        )
    cfg = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    # first: it is quick, and without it the parameters are of no use
    tokenizer = load_run_tokenizer(workdir, "restore that folder")
    model_cfg = config.model_config(cfg)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    tx, _ = optim.make_optimizer(
        cfg.train, max(cfg.train.steps, 1), cfg.model.get("family", "bert")
    )
    head = tasks.get(cfg).head
    state_sh = sharding.named(mesh, steps.state_specs(model_cfg, head, tx, mesh))
    init_fn = steps.make_init_fn(model_cfg, head, tx, mesh, 0)
    abstract = ckpt.abstract_like(jax.eval_shape(init_fn), state_sh)
    mgr = ckpt.manager(workdir, cfg.train.keep_checkpoints)
    kept = sorted(mgr.all_steps())
    best = ckpt.manager(workdir, 1, "best") if (workdir / "best").is_dir() else None
    best_step = best.latest_step() if best is not None else None
    try:
        which, step = choose(checkpoint, kept, best_step, workdir)
        if which == "best":
            params = recovery.restore_params(best, abstract["params"])
        else:
            params = recovery.restore_checked(mgr, step, abstract)[0]["params"]
    except recovery.DamagedError as e:
        if which == "best":
            raise
        before = [k for k in kept if k < step]
        other = f", or pass --checkpoint {before[-1]} to read that one" if before else ""
        raise recovery.DamagedError(
            e.step,
            e.problem,
            f"In {workdir}, {e}; run its train command once to set it aside and resume from "
            f"the one before{other}.",
        ) from None
    finally:
        mgr.close()
        if best is not None:
            best.close()
    return Run(cfg, model_cfg, tokenizer, params, int(step), mesh, workdir, which, kept[-1])


def steps_of(folder: pathlib.Path) -> list[int]:
    """The committed steps in a checkpoint folder (``W/checkpoints``, ``W/best``), ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def choose(
    checkpoint: str | int | None, kept: list[int], best_step: int | None, workdir, flag=None
) -> tuple[str, int]:
    """``(which, step)`` of the checkpoint that ``load`` reads: which is "best", "last" or
    "kept" (an older kept step); one sentence when ``checkpoint`` names none there, saying how
    to pass another with ``flag`` (``"last"`` -> ``"--checkpoint last"``, the default)."""
    flag = flag or (lambda value: f"--checkpoint {value}")
    steps_list = ", ".join(map(str, kept))
    also = ", last or best" if best_step is not None else " or last"
    if checkpoint in (None, ""):
        checkpoint = "best" if best_step is not None else "last"
    choice = str(checkpoint).strip().lower()
    if choice == "best":
        if best_step is None:
            raise config.ConfigError(
                f"{workdir} keeps no best checkpoint (only runs that pick one by a metric, such "
                f"as classification, keep W/best); pass {flag('last')} or one of its kept "
                f"steps: {steps_list}."
            )
        return "best", best_step
    if choice == "last":
        return "last", kept[-1]
    if not choice.isdigit():
        raise config.ConfigError(
            f"{flag(repr(checkpoint))} is neither best, last nor a step; pass one of the "
            f"kept steps of {workdir} ({steps_list}){also}."
        )
    if int(choice) not in kept:
        raise config.ConfigError(
            f"{workdir} keeps no checkpoint of step {int(choice)}; pass one of its kept steps "
            f"({steps_list}){also} as {flag('STEP')}."
        )
    return ("last" if int(choice) == kept[-1] else "kept"), int(choice)


def write_run_files(path: pathlib.Path, cfg, tokenizer, label_names, resuming: bool) -> None:
    """``W/tokenizer``, ``W/labels.json`` (string labels) and ``W/config.json``, from process 0;
    a resumed run keeps the tokenizer and config it started with, and a fresh start sets aside
    the best checkpoint an earlier attempt left (``set_aside_earlier_best``)."""
    if jax.process_index() == 0:
        if not resuming:
            set_aside_earlier_best(path)
        if not (resuming and (path / "tokenizer").exists()):
            save_tokenizer(tokenizer, path / "tokenizer")
        if label_names is not None:
            (path / "labels.json").write_text(json.dumps({"names": label_names}) + "\n")
        if not resuming:
            config.save(cfg, path / "config.json")
    if jax.process_count() > 1:  # no process opens W/best before process 0 has moved it
        multihost_utils.sync_global_devices("ptft_jax: run files written")


def set_aside_earlier_best(path: pathlib.Path) -> pathlib.Path | None:
    """Move ``W/best`` to ``W/earlier/best`` (``best.1``, ... when taken) at a fresh start: it
    is an earlier attempt's (one set aside as damaged and restarted, or one that died before
    its first checkpoint), and left in place its higher step would outlive this run's best in
    the rotation and be read back as this run's model. Kept, with a line that says so."""
    found = path / "best"
    if not found.is_dir():
        return None
    dest, n = path / "earlier" / "best", 1
    while dest.exists():
        dest, n = path / "earlier" / f"best.{n}", n + 1
    dest.parent.mkdir(exist_ok=True)
    found.rename(dest)
    log.warning(
        "%s held the best checkpoint of an earlier attempt, not of this run, which starts from "
        "step 0; moved it to %s",
        found,
        dest,
    )
    return dest
