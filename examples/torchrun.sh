#!/bin/bash
# Pre-train on several nodes without SLURM: run this script once on every node (README: "Many GPUs,
# many nodes"). torchrun starts one process per GPU and sets RANK, LOCAL_RANK, WORLD_SIZE,
# MASTER_ADDR and MASTER_PORT, which Lightning's TorchElastic environment reads.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash examples/torchrun.sh      # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash examples/torchrun.sh      # on node1
#   DRY_RUN=1 bash examples/torchrun.sh                                   # print the command only
#
# Extra arguments go to `selfsup train`. Run it again after a crash or a reboot: it passes --resume
# when the output folder (on storage every node sees) holds a checkpoint.

set -euo pipefail
PYTHON=${PYTHON:-python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-$("$PYTHON" -c "import torch; print(max(1, torch.cuda.device_count()))")}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
METHOD=${METHOD:-simclr}
DATA=${DATA:-folder:/data/imagenet}
OUTPUT_DIR=${OUTPUT_DIR:-runs/$METHOD-imagenet}
RECIPE=${RECIPE:-$("$PYTHON" -c "from selfsup.config import RECIPES; print(RECIPES / 'imagenet' / '$METHOD.yaml')")}

RESUME=()
if [ -f "$OUTPUT_DIR/last.ckpt" ]; then
  RESUME=(--resume)
fi

CMD=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node-rank "$NODE_RANK"
     --nproc-per-node "$GPUS_PER_NODE" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"
     -m selfsup.cli train --config "$RECIPE" --data "$DATA" --output-dir "$OUTPUT_DIR"
     --set trainer.accelerator=gpu --set "trainer.devices=$GPUS_PER_NODE" --set "trainer.num_nodes=$NNODES"
     --set trainer.strategy=ddp --set trainer.precision=bf16-mixed
     "${RESUME[@]}" "$@")

if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
