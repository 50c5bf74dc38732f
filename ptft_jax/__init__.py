"""ptft_jax: pretrain and fine-tune BERT-style encoders with JAX and Flax NNX."""

__version__ = "0.1.0"
