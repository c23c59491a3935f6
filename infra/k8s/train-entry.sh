#!/usr/bin/env bash
# Entry point of every pod of the GPU training Job (infra/production/k8s-gpu-base-job-template.json).
#
#   train-entry.sh --nnodes=N --gpus-per-node=G --master-port=P --subdomain=S --train-module=M [--stage=train] \
#                  -- <flow-run cmd>
#
# Every pod first points DVC at the remote named by its environment (the image carries the local development
# remote, 127.0.0.1:8333) and pulls the stage's inputs: the paths of its dvc.yaml deps that other stages produce
# (infra/k8s/stage_inputs.py, read at run time). Credentials come from the environment (the `ovt-services` secret,
# mounted with envFrom). Then node 0 (JOB_COMPLETION_INDEX=0) runs the Prefect flow run (the command after `--`),
# which runs `dvc repro --single-item <stage>` with $OVT_TORCHRUN (exported here) so the stage joins this job;
# nodes 1..N-1 run the same torchrun line directly as workers.
#
# Environment: OVT_DVC_REMOTE (remote name, default: the repository's core.remote, "local"), OVT_DVC_REMOTE_URL
# (default s3://$DVC_BUCKET/store), AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL (S3 endpoint; empty = AWS S3),
# MLFLOW_TRACKING_URI (the remote MLflow).
set -euo pipefail

NNODES=1 GPUS=1 PORT=29500 SUBDOMAIN=ovt-train MODULE=stages.train STAGE=train
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes=*) NNODES="${1#*=}" ;;
    --gpus-per-node=*) GPUS="${1#*=}" ;;
    --master-port=*) PORT="${1#*=}" ;;
    --subdomain=*) SUBDOMAIN="${1#*=}" ;;
    --train-module=*) MODULE="${1#*=}" ;;
    --stage=*) STAGE="${1#*=}" ;;
    --) shift; break ;;
    *) echo "train-entry.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# --- DVC remote and MLflow from the environment (written to .dvc/config.local, never committed)
REMOTE="${OVT_DVC_REMOTE:-local}"
ENDPOINT="${AWS_ENDPOINT_URL:-${MLFLOW_S3_ENDPOINT_URL:-}}"
python -m dvc remote modify --local "$REMOTE" url "${OVT_DVC_REMOTE_URL:-s3://${DVC_BUCKET:-dvc}/store}"
if [[ -n "$ENDPOINT" ]]; then
  python -m dvc remote modify --local "$REMOTE" endpointurl "$ENDPOINT"
else  # AWS S3: no endpoint override, not the image's 127.0.0.1
  python -m dvc remote modify --local "$REMOTE" endpointurl "https://s3.${AWS_DEFAULT_REGION:-us-east-1}.amazonaws.com"
fi
if [[ -z "${MLFLOW_TRACKING_URI:-}" ]]; then
  echo "train-entry.sh: MLFLOW_TRACKING_URI is not set (mount the ovt-services secret or set it in the work pool)" >&2
  exit 2
fi

# --- the stage's inputs, as dvc.yaml names them now
mapfile -t INPUTS < <(python infra/k8s/stage_inputs.py "$STAGE")
echo "pulling the inputs of ${STAGE}: ${INPUTS[*]}" >&2
python -m dvc pull "${INPUTS[@]}"

RANK="${JOB_COMPLETION_INDEX:-0}"
# Pod hostname is <job-name>-<index>; node 0 is <job-name>-0.<subdomain>.
MASTER="${HOSTNAME%-*}-0.${SUBDOMAIN}"
[[ "$NNODES" -eq 1 ]] && MASTER=127.0.0.1
export OVT_TORCHRUN="torchrun --nnodes=${NNODES} --nproc_per_node=${GPUS} --node_rank=${RANK} --master_addr=${MASTER} --master_port=${PORT}"
echo "node ${RANK}/${NNODES}: ${OVT_TORCHRUN} -m ${MODULE}" >&2

if [[ "$RANK" -eq 0 ]]; then
  exec "$@"
fi
exec ${OVT_TORCHRUN} -m "${MODULE}"
