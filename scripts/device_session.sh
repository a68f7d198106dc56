#!/usr/bin/env bash
# Runs on the lent GPU machine (scripts/prepare_device_wheels.sh makes what it carries
# beforehand, where PyPI is reachable): installs the carried wheels (.whl/: snakemake's,
# torchao's, LoadGen's) and the onnxruntime-gpu parts (.gpu/part_*, one or more per
# call, kept in ~/parts; .gpu*/total says how many make the archive), then runs one
# step of the GPU work with the real workflow.
# Everything that must survive between calls lives in $HOME; every call packs what
# exists so far into $OUT.
# usage: [TARGET=h200] scripts/device_session.sh <step>
#   TARGET names the machine's results where it is not config/gpu.yaml's target (h100)
#   setup     install what has arrived, print the machine's fingerprint
#   sweep     the GPU sweep (config/gpu.yaml), stopped after SWEEP_SECONDS (resumable);
#             ONLY="backend ..." runs only these backends' jobs (and what they need),
#             BATCHES="1 16" only those batch sizes of them
#   fidelity  scripts/harness_fidelity.py at batches 1 and 16 for every GPU backend, or
#             for FIDELITY_BACKENDS="name,name" (one per backend kind is enough)
#   second    a second, independent sweep at batches 1 and 16 (run-to-run check), of
#             every backend or of SECOND_ONLY="backend ..."
#   serve     the serving scenarios of config/serving-gpu.yaml on the sweep's artifacts,
#             or only SERVE_ONLY="backend ..."'s serving jobs
#   aoti      the AOTInductor reproduction
set -uo pipefail
step=${1:?step}
SITE=$HOME/site
RESULTS=$HOME/ib_results
SECOND=$HOME/ib_results_second
mkdir -p "$SITE" "$HOME/parts"
for carried in .gpu*; do [ -d "$carried" ] && cp -f "$carried"/* "$HOME/parts/"; done
# Once per machine: a warm machine keeps $HOME, and a second install of the same wheels
# would only cost the call's time.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 \
   && [ "$(ls .whl)" != "$(cat "$SITE/.whl_list" 2>/dev/null)" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl && echo "installed $(ls .whl | wc -l) wheels" \
    && ls .whl > "$SITE/.whl_list"
fi
# torchao (for the torchao-* rows), also when snakemake's wheels went in before it.
if ls .whl/torchao-*.whl >/dev/null 2>&1 && [ ! -d "$SITE/torchao" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/torchao-*.whl
fi
if [ ! -f "$SITE/.ort_gpu_installed" ] && [ -f "$HOME/parts/total" ] \
   && [ "$(ls "$HOME"/parts/part_* 2>/dev/null | wc -l)" = "$(cat "$HOME/parts/total")" ]; then
  rm -rf "$SITE"/onnxruntime "$SITE"/onnxruntime-*.dist-info
  cat "$HOME"/parts/part_* | xz -d | tar -x -C "$SITE" && touch "$SITE/.ort_gpu_installed"
fi
export PYTHONPATH=$SITE:$PWD/src
export PATH=$SITE/bin:$PATH
export PYTHONUNBUFFERED=1
GPU_CONFIG=config/gpu.yaml
if [ -n "${TARGET:-}" ]; then
  GPU_CONFIG=$HOME/gpu-$TARGET.yaml
  sed "s/^target: .*/target: $TARGET/" config/gpu.yaml > "$GPU_CONFIG"
fi
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 -c "import torchao; print('torchao', torchao.__version__)" 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader
# smk RESULTS_DIR [KEY=VALUE ...] -- TARGETS...
smk() {
  local results=$1; shift
  local overrides=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do overrides+=("$1"); shift; done
  shift
  # shellcheck disable=SC2086
  timeout -s INT "${SWEEP_SECONDS:-540}" python3 -m snakemake --cores 4 --scheduler greedy \
    --configfile "$GPU_CONFIG" ${OVERLAY:-} --config results_dir="$results" conda_env=gpu \
    "${overrides[@]}" --keep-going "$@"
}
case $step in
  setup) ;;
  sweep)
    # Rows measured before onnxruntime-gpu was installed read 'unavailable': redo them.
    if [ -f "$SITE/.ort_gpu_installed" ] && [ ! -f "$RESULTS/.ort_gpu_rows" ]; then
      grep -l '"unavailable"' "$RESULTS"/bench/*/*/ort*/bs*.json 2>/dev/null | xargs -r rm -f
      rm -rf "$RESULTS"/engines/*/*/ort-trt*
      mkdir -p "$RESULTS" && touch "$RESULTS/.ort_gpu_rows"
    fi
    targets=all
    if [ -n "${ONLY:-}" ]; then
      # shellcheck disable=SC2086
      targets=$(python3 -m inferbench bench-targets --config "$GPU_CONFIG" \
        --results-dir "$RESULTS" $ONLY) || exit 2
      if [ -n "${BATCHES:-}" ]; then
        targets=$(printf '%s\n' $targets | grep -E "/bs($(echo "$BATCHES" | tr ' ' '|'))\.json$")
      fi
    fi
    # shellcheck disable=SC2086
    smk "$RESULTS" -- $targets ;;
  fidelity)
    python3 scripts/harness_fidelity.py --config "$GPU_CONFIG" --results-dir "$RESULTS" \
      --backend "${FIDELITY_BACKENDS:-all}" --batch "${FIDELITY_BATCHES:-1,16}" 2>&1 \
      | tee "$RESULTS/harness_fidelity.md" ;;
  second)
    targets=all
    if [ -n "${SECOND_ONLY:-}" ]; then
      # shellcheck disable=SC2086
      targets=$(python3 -m inferbench bench-targets --config "$GPU_CONFIG" \
        --results-dir "$SECOND" $SECOND_ONLY | grep -E '/bs(1|16)\.json$') || exit 2
    fi
    # shellcheck disable=SC2086
    smk "$SECOND" 'batch_sizes=[1,16]' -- $targets ;;
  serve)
    targets="$RESULTS/serving_table.md"
    if [ -n "${SERVE_ONLY:-}" ]; then
      # only these backends' serving jobs (every scenario and padding of
      # config/serving-gpu.yaml); the table is then built where the results land
      # shellcheck disable=SC2086
      targets=$(python3 -m inferbench serve-targets --config "$GPU_CONFIG" \
        --config config/serving-gpu.yaml --results-dir "$RESULTS" $SERVE_ONLY) || exit 2
    fi
    # shellcheck disable=SC2086
    OVERLAY=config/serving-gpu.yaml smk "$RESULTS" -- $targets ;;
  aoti)
    # The AOTInductor crash, reduced: which load variant crashes (see the script).
    mkdir -p "$RESULTS"
    timeout 300 python3 scripts/aoti_repro.py ${AOTI_ARGS:-} --json "$RESULTS/aoti_repro.json" \
      2>&1 | tee "$RESULTS/aoti_repro.txt" ;;
esac
if [ -n "${OUT:-}" ]; then
  for folder in "$RESULTS" "$SECOND"; do
    [ -d "$folder" ] || continue
    tar -C "$folder" -czf "$OUT/$(basename "$folder").tgz" --exclude='*.onnx' \
      --exclude='*.npz' --exclude='models' --exclude='*.engine' --exclude='*.pt2' \
      --exclude='inductor_cache' --exclude='*.bin' . 2>/dev/null
  done
  tar -czf "$OUT/logs.tgz" logs 2>/dev/null
fi
exit 0
