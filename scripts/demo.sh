#!/usr/bin/env bash
# The main job on the embedded default model: SmolLM2-135M WikiText-2 perplexity at seqlen 2048.
# Default: the dense model under the standard CPU protocol (first 40 windows, docs/ARCHITECTURE.md §9, ~5-10 min
# on 2 cores). FULL=1 scores the whole test set (148 windows, ~20-30 min). RECIPE=NAME|FILE first
# prunes with that recipe (e.g. RECIPE=sparsegpt-2:4, ~5 min more) and scores the pruned checkpoint.
# Reports go to results-local/.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
mkdir -p results-local
model=smollm2-135m
tag=dense
if [ -n "${RECIPE:-}" ]; then
  tag=$(basename "${RECIPE%.*}" | tr ':/' '--')
  rm -rf "results-local/$tag"
  sparsekit compress smollm2-135m --recipe "$RECIPE" --out "results-local/$tag"
  model="results-local/$tag"
fi
if [ "${FULL:-0}" = "1" ]; then
  sparsekit eval "$model" --ppl wikitext2 --seqlen 2048 --json "results-local/smollm2-135m_${tag}_full.json"
else
  sparsekit eval "$model" --ppl wikitext2 --seqlen 2048 --limit 40 --json "results-local/smollm2-135m_${tag}_limit40.json"
fi
