#!/usr/bin/env bash
# Every CPU experiment behind the README's SmolLM2 tables, in two queues that share the machine's 2 cores
# (one torch thread each). Every script skips what it already has, so re-running after an interruption
# continues where it stopped; run it in the background at the start of a session:
#   nohup bash scripts/cpu_experiments.sh > cpu_experiments.log 2>&1 &
# Queue A: the pruning table (standard CPU protocol) and the quantization table (same protocol,
# results in bench/results/quant; the joint 2:4 + int4 model is kept for the zero-shot table). Queue B:
# the module study, the structured study, the packed sizes and the zero-shot table. Then both queues
# share the pruning x quantization grid (its own cheaper protocol, stated in its JSON).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PRUNE=magnitude-50,wanda-50,sparsegpt-50,magnitude-2:4,wanda-2:4,sparsegpt-2:4,magnitude-4:8,wanda-4:8,sparsegpt-4:8
SEARCH=wanda-60,sparsegpt-60,wanda-50-search,wanda-60-search,sparsegpt-50-search,sparsegpt-60-search
# GPTQ (act-order) vs RTN at int4 and int3; RTN for the other formats (their GPTQ points are in the grid)
QUANT=int4-rtn,int4-gptq,int3-rtn,int3-gptq,sparsegpt-2:4+int4-gptq,mxfp4-rtn,ternary-rtn,int8-rtn
QUANT=$QUANT,mxfp6-rtn,fp6-rtn
CKPT=results-local/checkpoints
(
  python bench/experiments/prune_table.py --recipes "$PRUNE,$SEARCH" --limit 40
  python bench/experiments/gptq_order.py
  python bench/experiments/prune_table.py --recipes sparsegpt-2:4+int4-joint --limit 40 --out bench/results/quant \
    --save-dir "$CKPT"
  python bench/experiments/prune_table.py --recipes "$QUANT" --limit 40 --out bench/results/quant
  sparsekit sweep --grid bench/sweeps/prune_vs_quant.yaml --out bench/results/prune_vs_quant  # workers share the folder
  echo "queue A done"
) &
(
  python bench/experiments/module_sensitivity.py --limit 4
  python bench/experiments/packed_size.py
  python bench/experiments/structured.py --limit 40
  python bench/experiments/zero_shot.py --checkpoints "$CKPT"
  sparsekit sweep --grid bench/sweeps/prune_vs_quant.yaml --out bench/results/prune_vs_quant  # workers share the folder
  echo "queue B done"
) &
wait
