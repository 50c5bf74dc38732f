"""The benchmark's peers: transformers' BertForMaskedLM on PyTorch (see ptft_jax/bench.py)."""

from __future__ import annotations

import time

from ptft_jax.bench_workload import TRAIN, model_fields, peak_rss, random_batch


def run_hf(model, batch, seq, dtype, attention_dropout, warmup, steps, compiled: bool) -> dict:
    """Time ``steps`` training steps of transformers' BertForMaskedLM on PyTorch."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    config = transformers.BertConfig(
        **model_fields(model, seq, attention_dropout), attn_implementation="sdpa"
    )
    net = transformers.BertForMaskedLM(config).to(device).train()
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
    raw = random_batch(batch, seq)
    ids = torch.from_numpy(raw["input_ids"]).long().to(device)
    labels = torch.full_like(ids, -100)
    rows = torch.arange(batch)[:, None]
    labels[rows, torch.from_numpy(raw["masked_positions"]).long()] = (
        torch.from_numpy(raw["masked_ids"]).long().to(device)
    )
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def one_step():
        with autocast:
            loss = forward(
                input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels
            ).loss
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
        "loss": float(loss),
        "peak_memory_bytes": int(peak) if peak else peak_rss(),
        "peak_memory_kind": "device" if peak else "host RSS",
        "head_rows": batch * seq,
        "last_layer_rows": batch * seq,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "devices": 1,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
