#!/usr/bin/env bash
# Set up the environment and run the offline toy-world demo (best-of-N + guidance, HTML report in outputs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/descore demo "$@"
