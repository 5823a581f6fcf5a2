#!/usr/bin/env bash
# Install onnx-ecc with its test extra (this builds the C++ library) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q ".[test]"
# Run from the tests folder so that the installed package (with its compiled library) is tested.
cd tests && python3 -m pytest -q -p no:cacheprovider --rootdir=. .
