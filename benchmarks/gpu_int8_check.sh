#!/usr/bin/env bash
# The int8 CUDA kernels' device check in one go, for a session with a GPU (a few minutes).
#
# On this (CPU) machine first:   bash benchmarks/gpu_int8_check.sh prepare
#   builds the CUDA library into build/cuda/ (nvcc, no GPU needed) and the protected int8 MNIST
#   models into build/gpu_int8/ (torch and the MNIST data needed; benchmarks/gpu_int8_check.py).
# Then on the GPU machine, carrying build/cuda/libonnx_ecc_ops.so and build/gpu_int8:
#   bash benchmarks/gpu_int8_check.sh run
#   runs the int8 host-maths and op-table tests, the int8 GPU tests of tests/custom_ops/test_gpu.py
#   (CUDA against CPU sessions, bit for bit; they skip without CUDAExecutionProvider) and
#   gpu_int8_check.py run on the prepared models. Needs onnxruntime-gpu there.
# Logs go to ${OUT:-/tmp/gpu_int8_check}; the exit status is non-zero when a step fails.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOGS=${OUT:-/tmp/gpu_int8_check}
mkdir -p "$LOGS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

case "${1:-run}" in
  prepare)
    ORT_INC=${ORT_INCLUDE_DIR:-$ROOT/build/cp311-cp311-linux_x86_64/ort_headers/deb/usr/include/onnxruntime}
    GEN=$(command -v ninja >/dev/null && echo "-G Ninja")
    cmake -S . -B build/cuda $GEN -DONNX_ECC_CUDA=ON -DORT_INCLUDE_DIR="$ORT_INC" >"$LOGS/cmake.log" 2>&1 &&
      cmake --build build/cuda -j "$(nproc)" >"$LOGS/build.log" 2>&1 || { tail -20 "$LOGS/build.log"; exit 1; }
    echo "built build/cuda/libonnx_ecc_ops.so"
    export ONNX_ECC_LIBRARY=${ONNX_ECC_LIBRARY:-$ROOT/build/cuda/libonnx_ecc_ops.so}  # loads without a GPU too
    python benchmarks/gpu_int8_check.py prepare build/gpu_int8
    ;;
  run)
    nvidia-smi -L 2>&1 | tee "$LOGS/gpu.txt"
    python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 |
      tee "$LOGS/ort.txt"
    export ONNX_ECC_LIBRARY=${ONNX_ECC_LIBRARY:-$ROOT/build/cuda/libonnx_ecc_ops.so}
    [ -f "$ONNX_ECC_LIBRARY" ] || { echo "no $ONNX_ECC_LIBRARY: run '$0 prepare' on a machine with nvcc"; exit 1; }
    status=0
    (cd tests && python -m pytest -q -p no:cacheprovider --rootdir=. custom_ops/test_cuda_int8_maths_on_host.py \
      custom_ops/test_op_table.py) 2>&1 | tail -3 | tee "$LOGS/host_tests.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    (cd tests && timeout 300 python -m pytest -q -p no:cacheprovider --rootdir=. -m gpu -rs custom_ops/test_gpu.py \
      -k "int_decode or int32_decode or im2col or int_sample_check or quantised_mnist") 2>&1 | tail -25 |
      tee "$LOGS/gpu_tests.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    if [ -d build/gpu_int8 ]; then
      timeout 240 python benchmarks/gpu_int8_check.py run build/gpu_int8 2>&1 | tee "$LOGS/models.txt"
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    else
      echo "no build/gpu_int8: run '$0 prepare' where torch and the MNIST data are" | tee "$LOGS/models.txt"
    fi
    exit $status
    ;;
  *) echo "usage: $0 [prepare|run]"; exit 2 ;;
esac
