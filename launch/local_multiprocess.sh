#!/usr/bin/env bash
# N CPU processes on this machine, each with D fake devices, joined through a localhost
# coordinator, all running `python -m ptft_jax.train <train arguments>`:
#
#   launch/local_multiprocess.sh N D --config configs/bert_tiny_mlm.py --workdir runs/mp
#
# SIGTERM/SIGINT are forwarded to every process (each checkpoints and exits 0); the exit
# status is the first non-zero status of any process. PYTHON picks the interpreter,
# PTFT_JAX_PORT the coordinator port (default: a free one).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS <train arguments>" >&2
  exit 2
fi
n=$1
d=$2
shift 2
python=${PYTHON:-python}
port=${PTFT_JAX_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
forward() { kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$d" \
    "$python" -m ptft_jax.train "$@" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  while true; do
    set +e
    wait "$pid"
    rc=$?
    set -e
    # wait returns >128 when a trapped signal interrupts it; the process is still running.
    if [[ $rc -gt 128 ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  if [[ $rc -ne 0 && $status -eq 0 ]]; then status=$rc; fi
done
exit "$status"
