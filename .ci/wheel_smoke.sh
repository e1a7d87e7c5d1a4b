#!/usr/bin/env bash
# The wheel as a user gets it: built, installed into a clean venv without the test extra, and run
# from a folder outside the source tree (so nothing is imported from it) through the README's first
# steps on the built-in tiny data set: --version, models, a 1-epoch train, compile, simulate, report.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS-constraints/cpu.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { echo "wheel smoke: $*"; }
step "building the wheel"
# from a copy of the committed files: setuptools builds in the tree and would leave build/ here
git archive --format=tar HEAD | (mkdir "$work/source" && tar -x -C "$work/source")
timeout 600 "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/source"
wheel=$(ls "$work"/dist/asa_deploy-*.whl)
step "installing $(basename "$wheel") into a clean venv"
"$PYTHON" -m venv "$work/venv"
timeout 900 "$work/venv/bin/python" -m pip install --quiet ${CONSTRAINTS:+-c "$PWD/$CONSTRAINTS"} "$wheel"

cd "$work"
bin="$work/venv/bin"
run() { step "asa-deploy $*"; timeout 600 "$bin/asa-deploy" "$@"; }
run --version
run models | tee models.txt
grep -q "dvs-small" models.txt || { echo "wheel smoke: 'asa-deploy models' lists no dvs-small"; exit 1; }
run train --data synthetic:gesture-tiny --model dvs-small --epochs 1 --T 5 --batch-size 4 \
    --eval-windows 2 --param c1=4 --param c2=8 --param c3=8 --param fc=16 --no-progress --out run
run compile run --chip speck2f --bias drop
run simulate run --engine exact --eval-windows 2
run report run
test -s run/report.html || { echo "wheel smoke: no report.html"; exit 1; }
step "passed"
