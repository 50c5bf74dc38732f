"""Hugging Face checkpoints: find them, read them into our parameters, write them back.

Names map one-to-one through the model family (``models/``): ``bert.encoder.layer.0.attention.
self.query.weight`` (torch nn.Linear, (out, in)) is our ``bert/encoder/layer/0/attention/self/
query/kernel`` (in, out), transposed; GPT-2's Conv1D weights are (in, out) already. A
LayerNorm's weight is our ``scale``, an nn.Embedding's our ``embedding``. The family says which
torch module each name is, what is tied or a buffer, and how its config.json names fields.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import pickle

import numpy as np

from ptft_jax import models
from ptft_jax.data.builtin import extract
from ptft_jax.errors import DataError

log = logging.getLogger(__name__)
# Our leaf name for a torch module's ``weight``, by the module's kind (family.module_kind).
_LEAF = {"norm": "scale", "embedding": "embedding", "linear": "kernel", "conv1d": "kernel"}


def resolve(init_from: str) -> pathlib.Path:
    """The local folder behind ``builtin:minilm_l6`` or ``hf:<folder or hub id>``."""
    if init_from == "builtin:minilm_l6":
        return extract("minilm_l6")
    if not init_from.startswith("hf:"):
        raise DataError(
            f"init_from={init_from!r} is not understood; use hf:<folder or hub id> or "
            "builtin:minilm_l6."
        )
    spec = init_from.removeprefix("hf:")
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DataError(f"init_from folder {spec!r} does not exist; check the path.")
    return _download(spec)


def _download(repo_id: str) -> pathlib.Path:
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "vocab.txt", "*.model"]
        )
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: all the same advice
        raise DataError(
            f"Could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}); "
            "download the model folder where you are online and set init_from=hf:/path/to/folder."
        ) from None
    return pathlib.Path(folder)


def read_json(folder: pathlib.Path) -> dict:
    """A HF folder's config.json as a dict, or one sentence on what is wrong with it."""
    path = folder / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise DataError(
            f"{folder} has no config.json; point init_from at a HF model folder."
        ) from None
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix it or download it again.") from None
    if not isinstance(hf, dict):
        raise DataError(f"{path} holds no JSON object; fix it or download it again.")
    return hf


def read_config(folder: pathlib.Path) -> dict:
    """Our ``model.*`` fields from a HF ``config.json`` (with ``family``); stops on a model
    no family computes exactly."""
    hf = read_json(folder)
    family = models.of_hf_config(hf, folder)
    fields = family.from_hf(hf, folder / "config.json")  # checks the values' types
    for key, value in family.HF_CONSTANTS.items():
        if hf.get(key, value) != value:
            raise DataError(
                f"{folder} has {key}={hf[key]!r}; ptft_jax computes {family.CONFIG.family} "
                f"models with {key}={value!r} only."
            )
    return {"family": family.CONFIG.family, **fields}


def read_tensors(folder: pathlib.Path, allow_pytorch_bin: bool = False) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint as numpy arrays (safetensors; .bin only when opted in)."""
    from safetensors.numpy import load_file

    files = sorted(folder.glob("model*.safetensors"))
    if files:
        tensors = {}
        for f in files:
            tensors.update(load_file(str(f)))
        return tensors
    bin_file = folder / "pytorch_model.bin"
    if not bin_file.exists():
        raise DataError(f"{folder} has no model.safetensors; point init_from at a HF model folder.")
    if not allow_pytorch_bin:
        raise DataError(
            f"{folder} has only pytorch_model.bin, which is a pickle; convert it with "
            "`transformers` (from_pretrained(DIR).save_pretrained(DIR)) to model.safetensors, or "
            "set --config.allow_pytorch_bin=True if you trust the file."
        )
    import torch

    try:
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(
            f"{bin_file} holds objects other than tensors, which torch.load(weights_only=True) "
            "refuses to unpickle; convert it to model.safetensors where you trust the file."
        ) from None
    return {k: v.float().numpy() for k, v in state.items()}


def to_ours(family, name: str) -> tuple[tuple, bool] | None:
    """``(our path, transpose?)`` for a HF tensor name; None for buffers and tied tensors.
    Names outside the family's top-level modules are the backbone's (a bare encoder)."""
    if name in family.TIED or family.BUFFERS.fullmatch(name):
        return None
    parts = name.split(".")
    if parts[0] not in family.TOP:
        parts = [family.BACKBONE, *parts]
    leaf, transpose = parts[-1], False
    if leaf == "weight":
        module = family.module_kind(parts[-2])
        leaf, transpose = _LEAF[module], module == "linear"
    path = tuple(int(p) if p.isdigit() else p for p in (*parts[:-1], leaf))
    return path, transpose


def to_hf(family, path: tuple) -> tuple[str, bool]:
    """``(HF tensor name, transpose?)`` for one of our parameter paths (``family``: the
    model family module)."""
    *parents, leaf = (str(p) for p in path)
    transpose = leaf == "kernel" and family.module_kind(parents[-1]) == "linear"
    if leaf in _LEAF.values():
        leaf = "weight"
    return ".".join((*parents, leaf)), transpose


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def to_hf_tensors(params: dict, family: str) -> dict[str, np.ndarray]:
    """Our (host) parameter tree of a ``family`` model as HF-named float32 tensors."""
    family = models.get(family)
    tensors = {}
    for path, value in _flatten(params):
        name, transpose = to_hf(family, path)
        arr = np.asarray(value, np.float32)
        tensors[name] = np.ascontiguousarray(arr.T if transpose else arr)
    return tensors


def load_params(
    tensors: dict[str, np.ndarray], fresh: dict, family: str = "bert"
) -> tuple[dict, list[str]]:
    """Our parameter tree with every tensor HF has, the rest (heads) left as in ``fresh``.

    Returns the tree and the paths initialised fresh. Stops on unexpected, missing encoder or
    mis-shaped tensors, naming them.
    """
    family = models.get(family)
    targets = dict(_flatten(fresh))
    out = _copy_tree(fresh)
    loaded, unexpected, ignored = set(), [], []
    for name, value in tensors.items():
        mapped = to_ours(family, name)
        if mapped is None:
            continue
        path, transpose = mapped
        if path not in targets:
            # Parts our task model does not have (a pooler under MLM, another task's head).
            known = path[0] in family.TOP and family.optional(path)
            (ignored if known else unexpected).append(name)
            continue
        value = np.asarray(value, np.float32)
        value = value.T if transpose else value
        if value.shape != tuple(targets[path].shape):
            if path[0] == family.CLASSIFIER:  # another label count: this task's head starts fresh
                ignored.append(name)
                continue
            raise DataError(
                f"Tensor {name} has shape {value.shape} but the model expects "
                f"{tuple(targets[path].shape)}; the checkpoint and its config.json disagree."
            )
        _set(out, path, value)
        loaded.add(path)
    if unexpected:
        raise DataError(f"Unexpected tensors in the checkpoint: {', '.join(unexpected[:8])}.")
    missing = ["/".join(map(str, p)) for p in targets if p not in loaded]
    encoder_missing = [
        "/".join(map(str, p)) for p in targets if p not in loaded and not family.optional(p)
    ]
    if encoder_missing:
        raise DataError(f"The checkpoint lacks encoder tensors: {', '.join(encoder_missing[:8])}.")
    if ignored:
        log.info("not used by this task: %s", ", ".join(ignored))
    return out, missing


def _copy_tree(tree):
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def export(
    params: dict,
    model_fields: dict,
    tokenizer,
    out_dir: pathlib.Path,
    architecture: str,
    id2label: dict[int, str] | None = None,
    family: str = "bert",
) -> None:
    """Write a HF model folder (config.json, model.safetensors, tokenizer files)."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_tensors(params, family)
    family = models.get(family)
    hf_config = {
        "architectures": [architecture],
        **family.hf_config(model_fields),
        # GPT2ForSequenceClassification finds each row's last token by this id; a RoBERTa
        # numbers positions from its own pad_token_id, which must then be written.
        "pad_token_id": model_fields.get("pad_token_id", tokenizer.pad_token_id),
        **{key: getattr(tokenizer, attr, None) for key, attr in family.TOKEN_IDS.items()},
        "tie_word_embeddings": True,
    }
    if id2label is None and family.CLASSIFIER in params:
        id2label = {i: f"LABEL_{i}" for i in range(model_fields["num_labels"])}
    if id2label is not None:
        hf_config["id2label"] = {str(i): label for i, label in id2label.items()}
        hf_config["label2id"] = {label: int(i) for i, label in id2label.items()}
    weights = out_dir / "model.safetensors"
    save_file(tensors, str(weights), metadata={"format": "pt"})
    # safetensors writes through a private temporary file (mode 0600): give the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    weights.chmod(0o666 & ~umask)
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    tokenizer.save_pretrained(str(out_dir))
