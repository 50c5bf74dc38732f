"""Generate text with a causal-LM workdir (``task=causal_lm``).

    python -m ptft_jax.generate --workdir W --prompt "Once upon a time" [--prompt "..."]
        [--max_new_tokens 50] [--temperature 1.0] [--top_k 0] [--top_p 1.0] [--seed 0]
        [--num_samples 1]

Prints one JSON line per prompt and sample, prompts in order and each prompt's samples
together: ``{"prompt", "text", "tokens"}``, where ``text`` is the continuation alone and
``tokens`` counts its tokens. A row stops at the tokenizer's end-of-text token (left out of the
text) or after ``--max_new_tokens``. An empty prompt starts from the end-of-text token, as
GPT-2's unconditional samples do.

``--temperature 0`` is greedy decoding (the most likely token at every step). Otherwise each
token is drawn from softmax(logits / temperature) after transformers' filters, in their order:
only the ``--top_k`` most likely tokens (0: no limit), then only the smallest set of those
whose probability reaches ``--top_p`` (nucleus sampling; 1.0: no limit). The same ``--seed``
draws the same text.

The prompts are right-padded to the context length (``max_position_embeddings``) and run once,
filling a key/value cache; then a ``while_loop`` feeds one token a row, at that row's own next
position, until every row has stopped, all in one jitted program. Its shapes depend only on
the number of rows, so one compile serves any prompts, token budget and sampling settings.
"""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ptft_jax import cli, metrics, models, steps, workdir
from ptft_jax.data.tokenize import end_of_text_id
from ptft_jax.errors import ConfigError, DataError


def check_request(prompts: list[str], max_new_tokens, temperature, top_k, top_p, seed, num_samples):
    """Stop with one sentence when no prompt is given or a sampling number cannot work; needs
    no workdir, so the command checks it before loading anything."""
    if not prompts:
        raise ConfigError(
            'no --prompt was given; pass one, as in --prompt "Once upon a time" (repeat the '
            "flag for several)."
        )
    if max_new_tokens < 1:
        raise ConfigError(f"--max_new_tokens={max_new_tokens} generates nothing; pass 1 or more.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(
            f"--temperature={temperature} is not a temperature; pass 0 (greedy) or a positive "
            "number such as 0.7."
        )
    if top_k < 0:
        raise ConfigError(f"--top_k={top_k} is negative; pass 0 (no limit) or a token count.")
    if not 0 < top_p <= 1:  # NaN fails this too
        raise ConfigError(
            f"--top_p={top_p} is outside (0, 1]; pass a probability such as 0.9 (1.0: no limit)."
        )
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed={seed} is outside 0..{2**32 - 1}; pass a seed in that range.")
    if num_samples < 1:
        raise ConfigError(f"--num_samples={num_samples} asks for nothing; pass 1 or more.")


def _encode(run: workdir.Run, prompts: list[str], max_new_tokens: int, eos: int) -> list[list]:
    """Token ids of each prompt (an empty one: the end-of-text token), checked to fit the
    model's context with ``max_new_tokens`` after them."""
    context = run.model_cfg.max_position_embeddings
    encoded = run.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    encoded = [list(ids) or [eos] for ids in encoded]
    for i, ids in enumerate(encoded):
        n, excess = len(ids), len(ids) + max_new_tokens - context
        if excess <= 0:
            continue
        if n < context:
            fix = f"lower --max_new_tokens to {context - n} or shorten the prompt"
        elif max_new_tokens < context:
            fix = f"shorten the prompt to at most {context - max_new_tokens} tokens"
        else:
            fix = f"lower --max_new_tokens below {context} and shorten the prompt"
        raise DataError(
            f"prompt {i + 1} has {n} tokens, which with --max_new_tokens={max_new_tokens} "
            f"exceeds the model's context of {context} tokens by {excess}; {fix}."
        )
    return encoded


def _keep_top(logits_BxV, top_k, top_p):
    """``logits`` with all but the ``top_k`` highest (0: all), then all but the smallest set of
    those whose probability reaches ``top_p``, set to -inf (transformers' top-k and top-p
    filters; ties with the last one kept stay)."""
    sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
    rank_V = jnp.arange(logits_BxV.shape[-1])
    keep_BxV = jnp.broadcast_to((top_k <= 0) | (rank_V < top_k), logits_BxV.shape)
    probs_BxV = jax.nn.softmax(jnp.where(keep_BxV, sorted_BxV, -jnp.inf), axis=-1)
    above_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # the mass ranked above each
    # The first token always stays (nothing is above it); top_p=1 keeps even the tail that
    # float rounding puts at a cumulative mass of 1.
    keep_BxV &= (top_p >= 1) | (above_BxV < top_p)
    cut_B = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1)
    return jnp.where(logits_BxV >= cut_B[:, None], logits_BxV, -jnp.inf)


def _pick(logits_BxV, key, temperature, top_k, top_p):
    """Each row's next token: the argmax at temperature 0, else a draw from the filtered
    softmax(logits / temperature)."""

    def draw(logits_BxV):
        scaled_BxV = logits_BxV / temperature
        filtering = (top_k > 0) | (top_p < 1)  # the sort costs as much as a small layer
        scaled_BxV = jax.lax.cond(filtering, _keep_top, lambda x, *_: x, scaled_BxV, top_k, top_p)
        return jax.random.categorical(key, scaled_BxV, axis=-1)

    def greedy(logits_BxV):
        return jnp.argmax(logits_BxV, axis=-1)

    return jax.lax.cond(temperature > 0, draw, greedy, logits_BxV).astype(jnp.int32)


def _decode(params, ids_BxM, lengths_B, eos, max_new, temperature, top_k, top_p, seed, *, graphdef):
    """Up to ``max_new`` tokens after each row's prompt (``ids_BxM``, the first ``lengths_B``
    of each row real), ``[B, M]``: column t is token t, the end-of-text token once a row stops.
    """
    model = nnx.merge(graphdef, params)
    cfg = model.cfg
    rows, length = ids_BxM.shape
    key = jax.random.key(seed)
    cache = models.get(cfg.family).empty_cache(cfg, rows)
    # Prefill: the whole padded prompt at positions 0.., logits only at each row's last token.
    logits_BxKxV, cache = model.cached(
        ids_BxM, jnp.zeros(rows, jnp.int32), cache, lengths_B[:, None] - 1
    )
    token_B = _pick(logits_BxKxV[:, 0], jax.random.fold_in(key, 0), temperature, top_k, top_p)
    out_BxM = jnp.full((rows, length), eos, jnp.int32).at[:, 0].set(token_B)

    def more(carry):
        t, _, _, _, done_B = carry
        return (t < max_new) & ~jnp.all(done_B)

    def step(carry):
        t, token_B, cache, out_BxM, done_B = carry
        # Each row's token t - 1 sits right after that row's own prompt and earlier tokens.
        logits_BxQxV, cache = model.cached(token_B[:, None], lengths_B + t - 1, cache)
        token_B = _pick(logits_BxQxV[:, 0], jax.random.fold_in(key, t), temperature, top_k, top_p)
        token_B = jnp.where(done_B, eos, token_B)
        out_BxM = jax.lax.dynamic_update_slice_in_dim(out_BxM, token_B[:, None], t, axis=1)
        return t + 1, token_B, cache, out_BxM, done_B | (token_B == eos)

    carry = (jnp.int32(1), token_B, cache, out_BxM, token_B == eos)
    return jax.lax.while_loop(more, step, carry)[3]


@functools.lru_cache(maxsize=8)
def _program(model_cfg, mesh):
    """The jitted ``_decode`` of a model (tokens replicated, so every process reads them whole);
    one per model, so repeated calls reuse its compiled program."""
    graphdef, _ = steps.abstract_model(model_cfg, "causal_lm")
    return jax.jit(
        functools.partial(_decode, graphdef=graphdef),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )


def generate_ids(
    run: workdir.Run,
    prompts: list[str],
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
) -> list[list[int]]:
    """The new token ids of each prompt's ``num_samples`` samples (prompt-major), the
    end-of-text token and what follows it left out. Arguments as ``generate``'s."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_request(prompts, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
    if run.task.head != "causal_lm":  # a distilled GPT student generates too
        raise ConfigError(
            f"{run.path} holds a task={run.cfg.task} run; generate needs a causal_lm run (train "
            "one with --config.task=causal_lm)."
        )
    eos = end_of_text_id(run.tokenizer)
    rows = [ids for ids in _encode(run, prompts, max_new_tokens, eos) for _ in range(num_samples)]
    ids_BxM = np.full((len(rows), run.model_cfg.max_position_embeddings), eos, np.int32)
    for r, ids in enumerate(rows):
        ids_BxM[r, : len(ids)] = ids
    lengths_B = np.array([len(ids) for ids in rows], np.int32)
    numbers = (eos, max_new_tokens, temperature, top_k, top_p, seed)
    dtypes = (np.int32, np.int32, np.float32, np.int32, np.float32, np.uint32)
    args = [dtype(x) for dtype, x in zip(dtypes, numbers, strict=True)]
    tokens_BxM = _program(run.model_cfg, run.mesh)(run.params, ids_BxM, lengths_B, *args)
    out = []
    for row in np.asarray(jax.device_get(tokens_BxM))[:, :max_new_tokens].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out


def generate(
    run: workdir.Run,
    prompts: list[str],
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
) -> list[dict]:
    """``{"prompt", "text", "tokens"}`` for each of ``num_samples`` samples of each prompt, in
    order: up to ``max_new_tokens`` new tokens, stopped at the end-of-text token. Temperature 0
    is greedy; otherwise draws from softmax(logits / temperature), limited to the ``top_k``
    most likely tokens (0: all) and then to those within ``top_p`` of the probability (1.0:
    all), reproducibly from ``seed``."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)  # one prompt, not chars
    ids = generate_ids(run, prompts, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
    prompt_of = [p for p in prompts for _ in range(num_samples)]
    return [
        {"prompt": p, "text": run.tokenizer.decode(t), "tokens": len(t)}
        for p, t in zip(prompt_of, ids, strict=True)
    ]


@cli.guarded
def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    f = flags.FLAGS
    if not f.workdir:
        cli.fail('pass --workdir W and --prompt "..." (repeat --prompt for several).')
    settings = {
        "max_new_tokens": f.max_new_tokens,
        "temperature": f.temperature,
        "top_k": f.top_k,
        "top_p": f.top_p,
        "seed": f.seed,
        "num_samples": f.num_samples,
    }
    check_request(f.prompt, **settings)  # before the workdir loads
    for row in generate(workdir.load(f.workdir), f.prompt, **settings):
        print(json.dumps(row))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax causal_lm run folder.")
    flags.DEFINE_multi_string("prompt", [], "Text to continue; repeat for several.")
    flags.DEFINE_integer("max_new_tokens", 50, "Most tokens to generate after each prompt.")
    flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 is greedy decoding.")
    flags.DEFINE_integer("top_k", 0, "Draw only from the k most likely tokens (0: all).")
    flags.DEFINE_float("top_p", 1.0, "Draw only from the smallest set reaching this mass.")
    flags.DEFINE_integer("seed", 0, "Random seed of the draws.")
    flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
    app.run(main, flags_parser=cli.parse_absl_flags)
