#!/usr/bin/env bash
# Entry point of every pod of the GPU training Job (k8s-gpu-base-job-template.json).
#
#   torchrun-entry.sh --nnodes=N --gpus-per-node=G --master-port=P --subdomain=S --train-module=M -- <flow-run cmd>
#
# Node 0 (JOB_COMPLETION_INDEX=0) runs the Prefect flow run (the command after `--`): the flow pulls the inputs and
# reproduces the train stage, whose launcher is $OVT_TORCHRUN (exported here) so the stage joins the same job.
# Nodes 1..N-1 pull the train stage's inputs and run the same torchrun directly as workers.
set -euo pipefail

NNODES=1 GPUS=1 PORT=29500 SUBDOMAIN=ovt-train MODULE=stages.train
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes=*) NNODES="${1#*=}" ;;
    --gpus-per-node=*) GPUS="${1#*=}" ;;
    --master-port=*) PORT="${1#*=}" ;;
    --subdomain=*) SUBDOMAIN="${1#*=}" ;;
    --train-module=*) MODULE="${1#*=}" ;;
    --) shift; break ;;
    *) echo "torchrun-entry.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

RANK="${JOB_COMPLETION_INDEX:-0}"
# Pod hostname is <job-name>-<index>; node 0 is <job-name>-0.<subdomain>.
MASTER="${HOSTNAME%-*}-0.${SUBDOMAIN}"
[[ "$NNODES" -eq 1 ]] && MASTER=127.0.0.1
export OVT_TORCHRUN="torchrun --nnodes=${NNODES} --nproc_per_node=${GPUS} --node_rank=${RANK} --master_addr=${MASTER} --master_port=${PORT}"
echo "node ${RANK}/${NNODES}: ${OVT_TORCHRUN} -m ${MODULE}" >&2

if [[ "$RANK" -eq 0 ]]; then
  exec "$@"
fi
python -m dvc pull train
exec ${OVT_TORCHRUN} -m "${MODULE}"
