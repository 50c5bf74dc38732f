"""Pods on paper: compile the real train step ahead of time for a TPU slice, on any host.

    python -m ptft_jax.train --config configs/bert_base_mlm.py --compile_only --topology v5p:4x4x4

The topology comes from libtpu (``pip install -e ".[tpu]"``) through
``jax.experimental.topologies``; no TPU is needed. The same mesh rules, state shardings and
``train_step`` as a real run are lowered for that slice's devices and compiled by the TPU
compiler, which reports what one chip would hold and compute per step.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
from flax import nnx

from ptft_jax import checkpoint, config, optim, sharding, steps, tasks

# Per chip: HBM (GiB) and dense bf16 peak (TFLOP/s), as the vendor publishes them.
CHIPS = {"v4": (32, 275), "v5e": (16, 197), "v5p": (95, 459), "v6e": (32, 918)}
GiB = 2**30


@dataclasses.dataclass
class Report:
    """One chip's share of a compiled train step."""

    topology: str
    chips: int
    mesh: dict
    arguments: int  # bytes: parameters, optimizer state, the batch (this chip's shards)
    temporaries: int  # bytes: activations and other scratch
    outputs: int  # bytes the outputs need beyond the donated (aliased) arguments
    code: int
    hbm: int
    flops: float  # this chip's FLOPs per step, as the compiler counts them
    peak_flops: float  # this chip's dense bf16 FLOP/s
    compile_s: float

    @property
    def total(self) -> int:
        return self.arguments + self.temporaries + self.outputs + self.code

    @property
    def step_s_at_peak(self) -> float:
        return self.flops / self.peak_flops


def topology_devices(name: str):
    """The devices of a TPU slice such as ``v5p:4x4x4`` or ``v5e:4x4`` (abstract, not local)."""
    m = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", name)
    if m is None:
        raise config.ConfigError(
            f"--topology={name!r} is not understood; use <chip>:<shape> with chip one of "
            f"{', '.join(CHIPS)}, such as v5p:2x4x4 or v5e:4x4."
        )
    # libtpu reads these at start-up; on a host that is not a TPU VM they only need to exist.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU is opened: share libtpu
    from jax.experimental import topologies

    megacore = m[1] in ("v4", "v5p")  # one device per chip (its two cores together)
    try:
        topo = topologies.get_topology_desc(
            topology_name=name,
            platform="tpu",
            chip_config_name="megacore" if megacore else "default",
            chips_per_host_bounds=(2, 2, 1),
        )
    except Exception as e:  # noqa: BLE001 - no libtpu, or a shape it rejects: one sentence
        raise config.ConfigError(
            f"Could not describe TPU topology {name!r} ({str(e).splitlines()[0][:160]}); "
            'install libtpu with pip install -e ".[tpu]" and use a slice shape that exists.'
        ) from None
    return m[1], topo.devices


def abstract_batch(cfg, task, mesh) -> dict:
    """ShapeDtypeStructs of one global batch of ``task`` (its ``batch_spec``), sharded as the
    real input pipeline's."""
    accum = cfg.train.grad_accum_steps
    rows = cfg.train.batch_size // accum
    return {
        k: jax.ShapeDtypeStruct(
            (accum, rows, *shape),
            dtype,
            sharding=jax.NamedSharding(mesh, sharding.batch_spec(2 + len(shape))),
        )
        for k, (shape, dtype) in task.batch_spec().items()
    }


def compile_report(cfg, topology: str) -> Report:
    """Compile ``cfg``'s train step for ``topology``; stop with the knobs to turn when one
    chip's share does not fit its HBM."""
    import time

    config.validate(cfg)
    task = tasks.get(cfg)
    if task.uses_teacher:
        raise config.ConfigError(
            "--compile_only compiles one model's train step; a distillation also runs its "
            "teacher, so compile the student's task (--config.task=mlm or classification)."
        )
    chip, devices = topology_devices(topology)
    mesh = sharding.make_mesh(cfg.mesh, devices)
    sharding.check_rows(mesh, cfg.train.batch_size // cfg.train.grad_accum_steps)
    model_cfg = config.model_config(cfg)
    tx, schedule = optim.make_optimizer(cfg.train, max(cfg.train.steps, 1), cfg.model.family)
    t0 = time.time()
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        batch = abstract_batch(cfg, task, mesh)
        train, _, state_sh = steps.jit_steps(model_cfg, task, tx, schedule, mesh, 0)
        init_fn = steps.make_init_fn(model_cfg, task.head, tx, mesh, 0)
        state = checkpoint.abstract_like(jax.eval_shape(init_fn), state_sh)
        lowered = train.lower(state, batch)
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:  # the TPU compiler's own out-of-memory stop
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            raise config.ConfigError(out_of_memory(str(e), chip)) from None
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    hbm, peak = CHIPS[chip]
    report = Report(
        topology=topology,
        chips=len(devices),
        mesh=dict(mesh.shape),
        arguments=mem.argument_size_in_bytes,
        temporaries=mem.temp_size_in_bytes,
        outputs=max(mem.output_size_in_bytes - mem.alias_size_in_bytes, 0),
        code=mem.generated_code_size_in_bytes,
        hbm=hbm * GiB,
        flops=float(cost["flops"]),
        peak_flops=peak * 1e12,
        compile_s=time.time() - t0,
    )
    check_fits(report)
    return report


KNOBS = (
    "lower train.batch_size (or raise train.grad_accum_steps), shard parameters and optimizer "
    "state with --config.mesh.fsdp, or set --config.model.remat=True"
)


def check_fits(report: Report) -> None:
    """Stop, naming the knobs, when one chip's share exceeds its HBM."""
    if report.total > report.hbm:
        chip = report.topology.split(":")[0]
        raise config.ConfigError(
            f"One {chip} chip would need {report.total / GiB:.1f} GiB for this train step but "
            f"has {report.hbm / GiB:.0f} GiB; {KNOBS}."
        )


def out_of_memory(message: str, chip: str) -> str:
    """One sentence for a compiler that stopped because a chip's share does not fit: what it
    needed (``... temporaries (99.09G) exceeds available HBM (95.74G)``) and the knobs."""
    import re

    sizes = re.findall(r"\(([\d.]+)G\)", message)
    need = "more than its HBM for this train step"
    if len(sizes) > 1:
        need = f"{sizes[0]} GiB of temporaries for this train step, more than its {sizes[1]} GiB"
    return f"The TPU compiler found that one {chip} chip would need {need}; {KNOBS}."


def describe(r: Report, cfg) -> str:
    """The report as a few lines a person reads."""
    tokens = cfg.train.batch_size * cfg.data.max_seq_length
    mesh = ", ".join(f"{k}={v}" for k, v in r.mesh.items())
    return "\n".join(
        [
            f"compiled the train step for {r.topology} ({r.chips} chips; mesh {mesh}) "
            f"in {r.compile_s:.1f}s",
            f"per chip: arguments {r.arguments / GiB:.2f} GiB + temporaries "
            f"{r.temporaries / GiB:.2f} GiB + outputs {r.outputs / GiB:.2f} GiB + code "
            f"{r.code / GiB:.2f} GiB = {r.total / GiB:.2f} GiB of {r.hbm / GiB:.0f} GiB HBM "
            f"({100 * r.total / r.hbm:.0f}%)",
            f"FLOPs per step: {r.flops * r.chips:.3e} ({r.flops:.3e} per chip); at the chip's "
            f"peak ({r.peak_flops / 1e12:.0f} TFLOP/s) a step takes {1e3 * r.step_s_at_peak:.1f}"
            f" ms, {tokens / r.step_s_at_peak:,.0f} tokens/s",
        ]
    )
