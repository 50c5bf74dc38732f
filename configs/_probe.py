from bert_tiny_mlm import get_config as g
def get_config():
    c = g(); c.model.hidden_dropout_prob = 0.0; c.model.attention_probs_dropout_prob = 0.0
    return c
