#!/usr/bin/env bash
# The GPU check of hpc_rlhf: one prepared script, under 10 minutes on one GPU machine (an H200, 16 cores),
# that prints ONE JSON line of results as its last line. Run it whenever a session has a GPU machine.
#
#   tools/gpu_check.sh --fetch-wheels   # where PyPI is reachable: the wheels a GPU image may lack -> .whl/
#   tools/gpu_check.sh                  # on the GPU machine, from the repository root (a copy of the tree)
#
# With the device tool of this workplace (/work/.library/device/README.md), .whl/ is git-ignored and travels
# when carried:  run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Missing packages are installed from .whl/ only (pip --no-index --target, then PYTHONPATH): nothing is
# fetched on the GPU machine. The PyTorch there is kept (its CUDA build); torch is never installed.
#
# Items (each passes or fails on its own, with seconds and its last error line; one failing never stops
# the others, and a missing config key is a failed item, not a crash):
#   env                imports, torch.cuda, the GPUs, mpiexec
#   pytest_gpu         python -m pytest -m gpu (tests/cluster/test_nodes.py: one GPU per local rank, refusal, and
#                      a CUDA_VISIBLE_DEVICES per task: accepted on 2+ GPUs, refused as shared on 1, by device UUID)
#   run_111_bf16       configs/tiny.yaml, layout 1+1+1 on the GPU, runtime.bf16=true
#   run_112_nccl       layout 1+1+2: the train group's torch.distributed backend is NCCL
#   run_112_fsdp_bf16  layout 1+1+2 with train.sharding=fsdp train.precision=bf16 (the keys of issue 16)
#   gen_engines        tokens/s of native, vLLM and HF generate on the ~160M model (vLLM must be installed)
# With fewer GPUs than ranks, runs set runtime.allow_shared_gpu=true (else refused: cluster/gpus.py); NCCL
# itself may refuse two ranks of one communicator on one GPU ("Duplicate GPU"): that item then fails
# naming it, and needs a machine with >= 2 GPUs.
# Environment: GPU_CHECK_STEPS (4 PPO steps per run), GPU_CHECK_WORK (/tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
PY=${PYTHON:-python3}
WANTS=(omegaconf antlr4-python3-runtime==4.9.3 submitit mpich mpi4py h5py safetensors)

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHL"
    for w in "${WANTS[@]}"; do
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$WHL" "$w" || echo "gpu_check: could not fetch $w" >&2
    done
    ls -l "$WHL"
    exit 0
fi

STEPS=${GPU_CHECK_STEPS:-4}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
rm -rf "$WORK" && mkdir -p "$WORK"
RESULTS="$WORK/results.jsonl"
T0=$SECONDS

item() { # NAME TIMEOUT_S CMD...: run, record {name, ok, s, detail}
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    local detail
    detail=$(grep -E "^error: rank|Duplicate GPU" "$WORK/$name.log" | head -n 1 | cut -c1-300) # the cause first
    [ -n "$detail" ] || detail=$(grep -E "error|Error|FAILED|failed|passed" "$WORK/$name.log" | tail -n 1 | cut -c1-300)
    [ $rc -eq 124 ] && detail="timed out after ${limit}s; $detail"
    $PY - "$name" "$rc" "$((SECONDS - start))" "$detail" >>"$RESULTS" <<'PYEOF'
import json, sys
name, rc, s, detail = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(json.dumps({"name": name, "ok": rc == 0, "rc": rc, "s": s, "detail": detail}))
PYEOF
    echo "gpu_check: $name rc=$rc in $((SECONDS - start)) s" >&2
}

# Packages the image lacks, from .whl/ only.
missing=$($PY -c "
import importlib.util as u
print(' '.join(m for m in ('omegaconf', 'submitit', 'mpi4py', 'h5py', 'safetensors', 'transformers') if u.find_spec(m) is None))")
command -v mpiexec >/dev/null || missing="$missing mpich"
if [ -n "${missing// /}" ] && ls "$WHL"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site "$WHL"/*.whl \
        >"$WORK/install.log" 2>&1 || echo "gpu_check: wheel install failed (see $WORK/install.log)" >&2
    export PYTHONPATH="/tmp/gpu_check_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="/tmp/gpu_check_site/bin:$PATH"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HPC_RLHF_GPU_CHECK=1 # gpu tests fail, not skip, without CUDA

item env 120 $PY -c "
import shutil, torch, transformers, omegaconf, submitit, mpi4py, h5py
assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'
assert shutil.which('mpiexec'), 'no mpiexec'
print('passed: torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(),
      torch.cuda.get_device_name(0), 'transformers', transformers.__version__)"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

item pytest_gpu 240 $PY -m pytest -q -m gpu -p no:cacheprovider --basetemp="$WORK/pytest"

RM="$WORK/rm"
$PY -m hpc_rlhf.launch.cli train-rm configs/tiny.yaml run_dir="$RM" runtime.device=cpu >"$WORK/rm.log" 2>&1
COMMON=(configs/tiny.yaml "total_steps=$STEPS" runtime.device=cuda "model.reward_path=$RM/reward_model"
    "model.tokenizer_path=$RM/tokenizer")
shared() { [ "$GPUS" -lt "$1" ] && echo runtime.allow_shared_gpu=true || echo runtime.allow_shared_gpu=false; }
item run_111_bf16 180 $PY -m hpc_rlhf.launch.cli train "${COMMON[@]}" run_dir="$WORK/r111" runtime.bf16=true "$(shared 3)"
L112=(layout.train=2 generate.shards_per_step=4 "$(shared 4)")
item run_112_nccl 180 $PY -m hpc_rlhf.launch.cli train "${COMMON[@]}" run_dir="$WORK/r112" "${L112[@]}"
item run_112_fsdp_bf16 180 $PY -m hpc_rlhf.launch.cli train "${COMMON[@]}" run_dir="$WORK/r112f" "${L112[@]}" \
    train.sharding=fsdp train.precision=bf16
# the generation engines on one GPU (tools/bench/gen_engines.py; docs/performance.md's engine table): needs
# vllm importable on the GPU machine (its CUDA build; not installed from .whl/), else the item fails naming it
item gen_engines 300 $PY tools/bench/gen_engines.py --sizes 160m --modes fixed ragged --rounds 2 \
    --out "$WORK/gen_engines.json"

$PY - "$RESULTS" "$((SECONDS - T0))" "$GPUS" <<'PYEOF'
import json, subprocess, sys
items = [json.loads(x) for x in open(sys.argv[1])]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"gpu_check": "hpc_rlhf", "commit": commit or None, "gpus": int(sys.argv[3]),
                  "ok": all(i["ok"] for i in items), "total_s": int(sys.argv[2]), "items": items}))
PYEOF
