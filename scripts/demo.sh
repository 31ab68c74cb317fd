#!/usr/bin/env bash
# The main job on the embedded default model: dense SmolLM2-135M WikiText-2 perplexity at seqlen 2048.
# Default: the standard CPU protocol (first 40 windows, DESIGN.md §9, ~5-10 min on 2 cores).
# FULL=1 scores the whole test set (148 windows, ~20-30 min). The report goes to results-local/.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
mkdir -p results-local
if [ "${FULL:-0}" = "1" ]; then
  sparsekit eval smollm2-135m --ppl wikitext2 --seqlen 2048 --json results-local/smollm2-135m_dense_full.json
else
  sparsekit eval smollm2-135m --ppl wikitext2 --seqlen 2048 --limit 40 --json results-local/smollm2-135m_dense_limit40.json
fi
