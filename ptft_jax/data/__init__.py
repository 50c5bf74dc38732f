"""Input pipeline: sources, tokenization, packing, masking, grain."""
