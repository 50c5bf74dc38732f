"""ptft_jax: pretrain and fine-tune BERT-style encoders with JAX and Flax NNX."""

from ptft_jax import environment, malloc

__version__ = "0.1.0"

malloc.use_tcmalloc()  # only for ``python -m ptft_jax.<command>``; see malloc.py
environment.quiet_environment()  # likewise: no start-up warnings a user cannot act on
