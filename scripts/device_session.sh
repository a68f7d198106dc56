#!/usr/bin/env bash
# Runs on the lent GPU machine (see README "GPU results"): installs the carried
# wheels and the onnxruntime-gpu parts from ~/parts, then runs the GPU sweep with
# the real workflow. Everything that must survive between calls lives in $HOME.
# usage: scripts/device_session.sh <step> ; step = setup | sweep | finish | aoti
#   ONLY="backend ..."  sweep: run only these backends' benchmark jobs (and what they
#                       need), e.g. the new rows; finish still builds the whole summary.
#   .whl/ holds the wheels to carry: snakemake's and torchao-0.17.0 (config/gpu.yaml).
set -uo pipefail
step=${1:?step}
SITE=$HOME/site
RESULTS=$HOME/ib_results
mkdir -p "$SITE" "$HOME/parts"
[ -d .gpu ] && cp -f .gpu/part_* "$HOME/parts/" 2>/dev/null
if [ -d .whl ] && [ ! -f "$SITE/.snakemake_installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl && touch "$SITE/.snakemake_installed"
fi
# torchao (for the torchao-* rows), also when snakemake's wheels went in before it.
if ls .whl/torchao-*.whl >/dev/null 2>&1 && [ ! -d "$SITE/torchao" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/torchao-*.whl
fi
if [ ! -f "$SITE/.ort_gpu_installed" ] && [ "$(ls "$HOME"/parts/part_* 2>/dev/null | wc -l)" = 4 ]; then
  cat "$HOME"/parts/part_* | xz -d | tar -x -C "$SITE" && touch "$SITE/.ort_gpu_installed"
fi
export PYTHONPATH=$SITE:$PWD/src
export PATH=$SITE/bin:$PATH
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 -c "import torchao; print('torchao', torchao.__version__)" 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
smk() {
  python3 -m snakemake --cores 1 --scheduler greedy --configfile config/gpu.yaml \
    --config results_dir="$RESULTS" conda_env=gpu "$@"
}
case $step in
  setup) ;;
  sweep)
    # ORT rows measured before onnxruntime-gpu was installed read 'unavailable': redo them.
    if [ -f "$SITE/.ort_gpu_installed" ] && [ ! -f "$RESULTS/.ort_gpu_rows" ]; then
      grep -l '"unavailable"' "$RESULTS"/bench/*/*/ort*/bs*.json 2>/dev/null | xargs -r rm -f
      rm -rf "$RESULTS"/engines/*/*/ort-trt*
      touch "$RESULTS/.ort_gpu_rows"
    fi
    targets=all
    if [ -n "${ONLY:-}" ]; then
      # shellcheck disable=SC2086
      targets=$(python3 -m inferbench bench-targets --config config/gpu.yaml \
        --results-dir "$RESULTS" $ONLY) || exit 2
    fi
    # shellcheck disable=SC2086
    timeout -s INT "${SWEEP_SECONDS:-500}" python3 -m snakemake --cores 1 --scheduler greedy \
      --configfile config/gpu.yaml --config results_dir="$RESULTS" conda_env=gpu \
      --keep-going $targets ;;
  aoti)
    # The AOTInductor crash, reduced: which load variant crashes (see the script).
    mkdir -p "$RESULTS"
    python3 scripts/aoti_repro.py ${AOTI_ARGS:-} --json "$RESULTS/aoti_repro.json" 2>&1 \
      | tee "$RESULTS/aoti_repro.txt" ;;
  finish)
    smk --keep-going all
    for check in ${FIDELITY:-torch-cuda-graph-fp16:16}; do
      python3 scripts/harness_fidelity.py --config config/gpu.yaml --results-dir "$RESULTS" \
        --backend "${check%%:*}" --batch "${check##*:}" 2>&1 | tee -a "$RESULTS/harness_fidelity.txt"
    done ;;
esac
if [ -n "${OUT:-}" ]; then
  tar -C "$RESULTS" -czf "$OUT/h100_results.tgz" --exclude='*.onnx' --exclude='*.npz' \
    --exclude='models' --exclude='*.engine' --exclude='*.pt2' . 2>/dev/null
  tar -czf "$OUT/h100_logs.tgz" logs 2>/dev/null
fi
exit 0
