#!/usr/bin/env bash
# One-call GPU check of genni_ext on a fresh GPU machine with torch, nvcc, CMake, pybind11,
# scikit-build-core, pytest, pytest-benchmark and compute-sanitizer, and no network:
#   1. build and install the package for this card (pip install --no-build-isolation --no-deps .)
#   2. the CUDA tests (python_tests: everything that needs a GPU)
#   3. the GPU benchmark (benchmarks/test_sweep_cuda.py) and its table, printed last
#   4. compute-sanitizer memcheck and racecheck on small sweeps of every kernel path
#   5. Nsight Compute counters of the tiled kernel (benchmarks/gpu/profile.py)
# Everything lands in $OUT (default ./gpu-out), eight files: device.txt, build.log, run.log
# (tests and benchmark output), bench.json, table.md, sanitize.log, profile.txt (Nsight
# Compute sections of one tiled launch per workload), summary.json.
# GENNI_GPU_ARCH=90 (say) builds for that architecture only; default: this card's.
# GENNI_GPU_STEPS="build tests bench sanitize profile" picks steps (default: all five); each
# step but the build has a time limit (GENNI_TESTS_TIMEOUT, GENNI_BENCH_TIMEOUT,
# GENNI_SANITIZE_TIMEOUT, GENNI_PROFILE_TIMEOUT seconds), so that the check fits a short lease.
# Narrower runs: GENNI_TESTS_K (pytest -k of the tests step, default "cuda"),
# GENNI_BENCH_WORKLOADS / GENNI_BENCH_METHODS (benchmarks/test_sweep_cuda.py),
# GENNI_SANITIZE_TOOLS (default "memcheck racecheck"), GENNI_SANITIZE_QUICK=1 (memcheck on
# the quick set too).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STEPS=${GENNI_GPU_STEPS:-"build tests bench sanitize profile"}
status=0
declare -A result

step() { [[ " $STEPS " == *" $1 "* ]]; }
record() {  # name exit-code seconds
  result[$1]="$2 ${3}s"
  echo "== $1: exit $2 in ${3}s"
  [[ $2 -eq 0 ]] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"
ARCH=${GENNI_GPU_ARCH:-$(python3 -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")}

if step build; then
  start=$SECONDS
  python3 -m pip install --no-build-isolation --no-deps -v \
    -Ccmake.define.GENNI_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" . \
    > "$OUT/build.log" 2>&1
  code=$?
  record build $code $((SECONDS - start))
  grep -E "error|warning" "$OUT/build.log" | head -20
  (cd / && python3 -c "import genni_ext, json; print(json.dumps(genni_ext.build_info()))") \
    | tee -a "$OUT/device.txt"
  [[ $code -eq 0 ]] || exit 1
fi

if step tests; then
  start=$SECONDS
  timeout "${GENNI_TESTS_TIMEOUT:-200}" pytest python_tests/cuda/test_tiled.py python_tests/engine/test_fused.py python_tests/cli/test_cli.py -q -k "${GENNI_TESTS_K:-cuda}" -p no:cacheprovider \
    > "$OUT/tests.tmp" 2>&1
  record tests $? $((SECONDS - start))
  tail -5 "$OUT/tests.tmp"
  { echo "### tests"; cat "$OUT/tests.tmp"; } >> "$OUT/run.log"
  rm -f "$OUT/tests.tmp"
fi

if step bench; then
  start=$SECONDS
  timeout "${GENNI_BENCH_TIMEOUT:-300}" pytest benchmarks/test_sweep_cuda.py -q -p no:cacheprovider --benchmark-json="$OUT/bench.json" \
    > "$OUT/bench.tmp" 2>&1
  record bench $? $((SECONDS - start))
  tail -3 "$OUT/bench.tmp"
  { echo "### bench"; cat "$OUT/bench.tmp"; } >> "$OUT/run.log"
  rm -f "$OUT/bench.tmp"
  python3 benchmarks/gpu/report.py "$OUT/bench.json" > "$OUT/table.md" 2>&1
fi

if step sanitize; then
  for tool in ${GENNI_SANITIZE_TOOLS:-memcheck racecheck}; do
    start=$SECONDS
    quick=$([[ $tool == racecheck || -n ${GENNI_SANITIZE_QUICK:-} ]] && echo --quick)
    timeout "${GENNI_SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      python3 benchmarks/gpu/sanitize.py $quick > "$OUT/sanitize-$tool.tmp" 2>&1
    record "$tool" $? $((SECONDS - start))
    tail -3 "$OUT/sanitize-$tool.tmp"
    { echo "### $tool"; cat "$OUT/sanitize-$tool.tmp"; } >> "$OUT/sanitize.log"
    rm -f "$OUT/sanitize-$tool.tmp"
  done
fi

if step profile; then
  start=$SECONDS
  timeout "${GENNI_PROFILE_TIMEOUT:-120}" ncu --clock-control none --kernel-name regex:tile_kernel \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    python3 benchmarks/gpu/profile.py > "$OUT/profile.txt" 2>&1
  record profile $? $((SECONDS - start))
fi

python3 - "$OUT" <<PY
import json, sys
summary = {k: v for k, v in [$(for k in "${!result[@]}"; do echo "(\"$k\", \"${result[$k]}\"),"; done)]}
json.dump(summary, open(sys.argv[1] + "/summary.json", "w"), indent=1)
PY
echo "== summary: ${!result[*]} -> $(for k in "${!result[@]}"; do echo -n "$k=${result[$k]}; "; done)"
[[ -f "$OUT/table.md" ]] && cat "$OUT/table.md"
exit $status
