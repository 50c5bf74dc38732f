#!/usr/bin/env bash
# Every worker of a Cloud TPU VM slice: install this revision of ptft_jax, then run the same
# train command on all workers at once (jax.distributed finds the pod by itself).
#
#   launch/tpu_vm.sh TPU_NAME ZONE --config configs/bert_large_mlm.py --workdir gs://bucket/runs/large
#
# Needs gcloud with access to the TPU VM. The revision is the current git commit of this
# checkout, pushed to REMOTE (default: origin); the workdir should be a bucket or a disk all
# workers share. PROJECT sets the gcloud project.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE <train arguments>" >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
remote_url=$(git config --get "remote.${REMOTE:-origin}.url")
revision=$(git rev-parse HEAD)
project=()
if [[ -n "${PROJECT:-}" ]]; then project=(--project "$PROJECT"); fi
printf -v train_args '%q ' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${project[@]}" --worker=all --command "
  set -euo pipefail
  if [[ ! -d ptft_jax ]]; then git clone -q '$remote_url' ptft_jax; fi
  cd ptft_jax && git fetch -q origin && git checkout -q '$revision'
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -e '.[tpu]'
  python -m ptft_jax.train $train_args
"
