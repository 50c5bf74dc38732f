import json

from ptft_jax.metrics import Writer
from ptft_jax.scores import mlm_eval_metrics


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path):
    w = Writer(tmp_path, total_steps=10, start_step=0, resumed=False)
    for step in range(1, 6):
        w.write(step, "train", {"loss": float(step)})
    w.close()
    # Killed after step 5; the last checkpoint was step 3: steps 4-5 will be logged again.
    w = Writer(tmp_path, total_steps=10, start_step=3, resumed=True)
    w.write(4, "train", {"loss": 40.0})
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert all(r["split"] == "train" for r in rows)


def test_eval_metrics_from_sums():
    m = mlm_eval_metrics({"loss_sum": 20.0, "correct_sum": 3.0, "weight_sum": 10.0})
    assert m["loss"] == 2.0 and m["mlm_accuracy"] == 0.3
    assert abs(m["perplexity"] - 7.389056) < 1e-5
