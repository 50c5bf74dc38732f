import io
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


def _session_starts(folder) -> list[int]:
    """The steps of the SessionLog START events (TensorBoard's purge marks) in event files."""
    import struct

    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted(folder.iterdir()):
        data, at = path.read_bytes(), 0
        while at < len(data):  # TFRecord: length, its CRC, the record, its CRC
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                steps.append(event.step)
            at += 16 + length
    return steps


def test_tensorboard_hides_what_a_resume_or_a_fresh_start_logs_again(tmp_path):
    """A resume from step 4 marks step 5 (rows after the checkpoint are logged again); a fresh
    start in a used workdir marks step 0 (an earlier attempt's rows are not this run's)."""
    w = Writer(tmp_path, total_steps=10, start_step=4, resumed=True, progress=io.StringIO())
    w.close()
    assert _session_starts(tmp_path / "tensorboard") == [5]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    w = Writer(fresh, total_steps=10, start_step=0, resumed=False, progress=io.StringIO())
    w.close()
    assert _session_starts(fresh / "tensorboard") == [0]
