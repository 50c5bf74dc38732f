"""The benchmark's peers: transformers' BertForMaskedLM, ModernBertForMaskedLM and
GPT2LMHeadModel on PyTorch (see ptft_jax/bench.py)."""

from __future__ import annotations

import time

from ptft_jax.bench_workload import (
    MODELS,
    TRAIN,
    loss_rows,
    model_fields,
    peak_rss,
    random_batch,
)

# GPT2Config's names for the fields ``model_fields`` gives (resid_pdrop also sets embd_pdrop).
GPT2_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "intermediate_size": "n_inner",
    "max_position_embeddings": "n_positions",
    "hidden_dropout_prob": "resid_pdrop",
    "attention_probs_dropout_prob": "attn_pdrop",
}


def hf_model(model: str, seq: int, attention_dropout: float):
    """The transformers model of ``model``'s family, randomly initialised, SDPA attention."""
    import transformers

    fields = model_fields(model, seq, attention_dropout)
    if MODELS[model].family == "bert":
        config = transformers.BertConfig(**fields, attn_implementation="sdpa")
        return transformers.BertForMaskedLM(config)
    if MODELS[model].family == "modernbert":
        fields["norm_eps"] = fields.pop("layer_norm_eps")
        config = transformers.ModernBertConfig(
            **fields,
            pad_token_id=0,
            bos_token_id=1,
            cls_token_id=1,
            eos_token_id=2,
            sep_token_id=2,
            sparse_prediction=True,  # its head at the labelled positions only, as it trains
            attn_implementation="sdpa",
        )
        return transformers.ModernBertForMaskedLM(config)
    end = fields["vocab_size"] - 1  # GPT-2's end-of-text id is its last (50256), here too
    config = transformers.GPT2Config(
        **{GPT2_NAMES[k]: v for k, v in fields.items()},
        embd_pdrop=fields["hidden_dropout_prob"],
        bos_token_id=end,
        eos_token_id=end,
        attn_implementation="sdpa",
    )
    return transformers.GPT2LMHeadModel(config)


def hf_inputs(model: str, batch: int, seq: int, device) -> dict:
    """The forward's arguments for ``random_batch``'s rows, ``labels`` included so that the
    model computes its own loss (GPT-2 shifts them itself: ``labels`` are the input ids)."""
    import torch

    raw = random_batch(model, batch, seq)
    ids = torch.from_numpy(raw["input_ids"]).long().to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if MODELS[model].family == "gpt2":
        return {**inputs, "labels": ids}
    labels = torch.full_like(ids, -100)
    rows = torch.arange(batch)[:, None]
    labels[rows, torch.from_numpy(raw["masked_positions"]).long()] = (
        torch.from_numpy(raw["masked_ids"]).long().to(device)
    )
    if MODELS[model].family == "modernbert":  # no token types
        return {**inputs, "labels": labels}
    return {**inputs, "token_type_ids": torch.zeros_like(ids), "labels": labels}


def run_hf(model, batch, seq, dtype, attention_dropout, warmup, steps, compiled: bool) -> dict:
    """Time ``steps`` training steps of transformers' BertForMaskedLM or GPT2LMHeadModel on
    PyTorch."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    net = hf_model(model, seq, attention_dropout).to(device).train()
    opt_kwargs = {"fused": True} if cuda else {"foreach": True}
    opt = torch.optim.AdamW(
        net.parameters(),
        lr=TRAIN["learning_rate"],
        betas=(TRAIN["adam_b1"], TRAIN["adam_b2"]),
        eps=TRAIN["adam_eps"],
        weight_decay=TRAIN["weight_decay"],
        **opt_kwargs,
    )
    forward = torch.compile(net) if compiled else net
    inputs = hf_inputs(model, batch, seq, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def one_step():
        with autocast:
            loss = forward(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), TRAIN["max_grad_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    one_step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        one_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = one_step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {
        "step_s": step_s,
        "compile_s": max(first_s - step_s, 0.0) if compiled else 0.0,
        "loss": float(loss.detach()),
        "peak_memory_bytes": int(peak) if peak else peak_rss(),
        "peak_memory_kind": "device" if peak else "host RSS",
        # ModernBertForMaskedLM's sparse prediction: its head at the labelled positions.
        "head_rows": loss_rows(model, batch, seq) if "modernbert" in model else batch * seq,
        "last_layer_rows": batch * seq,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "devices": 1,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
