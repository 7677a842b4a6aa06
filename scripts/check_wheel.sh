#!/usr/bin/env bash
# Build invert's wheel, install it into a fresh virtual environment outside the source tree,
# and run the offline demo from there: the wheel must work without the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m pip wheel -q --no-deps -w "$work/dist" "$repo"
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "torch==2.13.0" "$(ls "$work"/dist/invert-*.whl)[cli,demo]"
cd "$work"
"$work/venv/bin/invert" -q demo --out "$work/demo"
test -s "$work/demo/explanations.jsonl"
test -s "$work/demo/report/index.html"
echo "check_wheel: the wheel installs and runs the demo outside the repository"
