import jax
import pytest
from helpers import assert_golden
from jax.sharding import PartitionSpec

from ptft_jax import sharding, steps
from ptft_jax.models.bert import BertConfig as ModelConfig
from ptft_jax.optim import path_str

SNAPSHOT_MODEL = ModelConfig(
    vocab_size=128,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
)


def _specs(mesh_cfg):
    mesh = sharding.make_mesh(mesh_cfg)
    _, abstract = steps.abstract_model(SNAPSHOT_MODEL, "mlm")
    specs = sharding.param_specs(abstract, mesh)
    flat = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )[0]
    return {path_str(p): [a if not isinstance(a, tuple) else list(a) for a in s] for p, s in flat}


def test_partition_spec_snapshot():
    """Every parameter's PartitionSpec on a (data=2, fsdp=2, tensor=2) mesh. Did you mean to
    change how parameters are sharded? Regenerate with PTFT_UPDATE_GOLDEN=1."""
    assert_golden("partition_specs.json", _specs({"data": 2, "fsdp": 2, "tensor": 2}))


def test_indivisible_dimension_is_replicated():
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 8})
    spec = sharding.logical_to_spec(("vocab", "embed"), (30522, 64), mesh)
    assert spec == PartitionSpec(None, "fsdp")
    spec = sharding.logical_to_spec(("vocab", "embed"), (32768, 64), mesh)
    assert spec == PartitionSpec("tensor", "fsdp")


@pytest.mark.parametrize(
    "cfg,shape",
    [
        ({"data": -1, "fsdp": 1, "tensor": 1}, (8, 1, 1)),
        ({"data": 2, "fsdp": -1, "tensor": 2}, (2, 2, 2)),
        ({"data": 1, "fsdp": 4, "tensor": -1}, (1, 4, 2)),
    ],
)
def test_mesh_shape(cfg, shape):
    assert sharding.mesh_shape(cfg, 8) == shape


@pytest.mark.parametrize(
    "cfg", [{"data": 3, "fsdp": 1, "tensor": 1}, {"data": -1, "fsdp": -1}, {"data": 2}]
)
def test_bad_mesh_is_a_clear_error(cfg):
    with pytest.raises(sharding.MeshError, match="--config.mesh"):
        sharding.mesh_shape(cfg, 8)


def test_process_rows_single_process():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert sharding.process_rows(mesh, 16) == (0, 16)
