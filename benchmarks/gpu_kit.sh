#!/usr/bin/env bash
# The kit for a GPU machine whose Python has torch but not crystalgrid's data stack, and the one
# command that runs there: the 10m-gpu benchmark on the MP binaries, then (in the time left)
# the training and GPU-gridding speed benchmarks; results packed into one archive.
#
#   bash benchmarks/gpu_kit.sh wheels [DIR] [PYTHON_VERSION]  # wheels of what such an image lacks
#   bash benchmarks/gpu_kit.sh crystals [FILE]                 # the crystals, copied into .kit/
#   bash benchmarks/gpu_kit.sh run OUT [SECONDS]               # on the GPU machine (see below)
#
# `wheels` downloads, for CPython PYTHON_VERSION (default 3.12, the GPU image's) on x86-64
# Linux, the exact versions pinned below, into DIR (default .whl). The GPU image already holds
# numpy, scipy, matplotlib, pandas, networkx, sympy, lxml, requests, tqdm, click, pyyaml,
# cloudpickle, toolz, fsspec, psutil, msgpack, jinja2, sortedcontainers, pyparsing and torch.
#
# `run` installs the wheels into /tmp/site (no network: --no-index), runs the benchmark with
# its output under /tmp/cg-bench, then the speed benchmarks, all stopped SECONDS (default 500)
# after its start (0: the benchmark alone, without a limit), and writes OUT/results.tgz
# (results, logs, pictures; no checkpoints or stores) and OUT/run.log. BENCH_ARGS adds options
# to the benchmark; KIT_WHEEL_DIR names another wheel folder (a CPU dry run on Python 3.11:
# `bash benchmarks/gpu_kit.sh wheels /tmp/whl311 3.11`, then KIT_WHEEL_DIR=/tmp/whl311
# BENCH_ARGS="--crystals 40 --steps 4 --device cpu --repr repeated" bash benchmarks/gpu_kit.sh
# run /tmp/dry 0).
set -euo pipefail

KIT_WHEELS=(
  pymatgen-core==2026.10.16 monty==2026.10.21 spglib==2.8.0 ruamel.yaml==0.19.1
  uncertainties==3.2.3 palettable==3.3.3 orjson==3.13.0
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0
  tornado==6.6.1 connected-components-3d==4.1.1
)
# bibtexparser 1.x (a pymatgen-core requirement) is published as a source archive only.
SDIST_WHEELS=(bibtexparser==1.4.4)

wheels() {
  local dir=${1:-.whl} pyver=${2:-3.12}
  mkdir -p "$dir"
  local platforms=()
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${platforms[@]}" -d "$dir" "${KIT_WHEELS[@]}"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "${SDIST_WHEELS[@]}"
  python3 -m pip wheel -q --no-deps -w "$dir" "$tmp"/*
  rm -rf "$tmp"
  du -sh "$dir"
}

crystals() {
  local src=${1:-../shared/data/mp_binaries/mp_binaries.json.gz}
  mkdir -p .kit
  cp "$src" .kit/
  ls -l .kit
}

run() {
  local out=${1:?usage: gpu_kit.sh run OUT [SECONDS]} limit=${2:-500}
  local start=$SECONDS bench=/tmp/cg-bench
  mkdir -p "$out"
  exec > >(tee "$out/run.log") 2>&1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${KIT_WHEEL_DIR:-.whl}"/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  nvidia-smi -L || true
  python3 -c "import torch, crystalgrid; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  mkdir -p "$bench"
  local status=0 bench_limit=0
  # The speed benchmarks get at least the last 90 s; a limit of 0 runs the benchmark alone.
  ((limit > 0)) && bench_limit=$((limit > 180 ? limit - 90 : limit))
  # Stopped at the limit, a run still leaves what it finished (results-partial.*) to pack.
  timeout "$bench_limit" python3 -m crystalgrid benchmark --budget 10m-gpu \
    --source .kit/mp_binaries.json.gz --out "$bench/10m-gpu" -q ${BENCH_ARGS:-} || status=$?
  echo "benchmark exit $status after $((SECONDS - start)) s"
  local left=$((limit - (SECONDS - start)))
  if ((limit > 0 && left > 30)); then
    timeout "$((left * 2 / 5))" python3 benchmarks/bench_gpu_grids.py \
      --mp-file .kit/mp_binaries.json.gz --min-time 0.5 \
      --batch-sizes 256 1024 4096 > "$bench/bench_gpu_grids.md" || true
  fi
  left=$((limit - (SECONDS - start)))
  if ((limit > 0 && left > 30)); then
    # Rows print as they finish: eager first, then compiled (which compiles for a minute).
    timeout "$((left - 10))" python3 benchmarks/bench_train.py --batch-sizes 128 256 24 \
      --precisions bf16 --compile off on --steps 20 --warmup 5 \
      --json "$bench/bench_train.json" > "$bench/bench_train.md" || true
  fi
  tar czf "$out/results.tgz" -C "$bench" --exclude='*.pt' --exclude='stores' .
  echo "done after $((SECONDS - start)) s"
  return "$status"
}

cmd=${1:-}
shift || true
case "$cmd" in
  wheels) wheels "$@" ;;
  crystals) crystals "$@" ;;
  run) run "$@" ;;
  *) echo "usage: gpu_kit.sh wheels [DIR] [PYVER] | crystals [FILE] | run OUT [SECONDS]" >&2; exit 2 ;;
esac
