#!/usr/bin/env bash
# The harness of the GPU check (benchmarks/gpu_check.py): what runs here before a lent GPU machine
# is asked for, and what runs there around the check.
#
# A lent machine (the device tool's README) has python3 3.12 with torch 2.11 (CUDA 13), transformers
# and sentence-transformers, but only the CPU onnxruntime, and no network; a call takes 64 MiB with
# the checkout (~19 MiB of it). So onnxruntime-gpu (~255 MB) travels in 40 MiB pieces, one a call,
# while the machine stays warm (30 s after each call), and the check's export and SciFact with the
# last piece:
#
#   bash benchmarks/gpu_check.sh pack     here: the pieces under .ortgpu/NN/, the carried export and
#                                         SciFact (benchmarks.gpu_carry), then the calls to make:
#       run(command="ls -l .ortgpu/00", carry=[".ortgpu/00"], timeout_s=60)   ... one per piece but the last
#       run(command="bash benchmarks/gpu_check.sh run", carry=[".ortgpu/06", "benchmarks/.cache/gpu-carry"],
#           timeout_s=480)                then give_back. On the same warm machine a rerun needs no pieces.
#   bash benchmarks/gpu_check.sh run [ARGS]   there: install (below), unpack the carried SciFact, run
#                                         python3 -m benchmarks.gpu_check ARGS with onnxruntime-gpu first on
#                                         the path, its log to $OUT/gpu-check.log beside its results
#   bash benchmarks/gpu_check.sh install  there: join the pieces and pip-install the wheel, offline, into
#                                         .ortgpu/site (reused while the pieces are the same ones)
#
# ORTGPU_DIR (default .ortgpu), PYTHON (default python3), ORT_VERSION (1.31.1) and PIECE_MB (40) change
# the defaults. Lower PIECE_MB if the checkout grew (`git ls-files -z | xargs -0 du -cb | tail -1`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ortgpu=${ORTGPU_DIR:-$root/.ortgpu}
python=${PYTHON:-python3}
carry=$root/benchmarks/.cache/gpu-carry

die() { echo "gpu_check.sh: $*" >&2; exit 2; }

pieces() {  # the pieces in order, after checking that none is missing
  shopt -s nullglob
  local found=("$ortgpu"/[0-9]*/part-*) numbers=() missing=() i n
  [ ${#found[@]} -gt 0 ] || die "no pieces under $ortgpu/NN/part-NN (make them here with" \
    "'bash benchmarks/gpu_check.sh pack' and carry each .ortgpu/NN folder)"
  mapfile -t numbers < <(for p in "${found[@]}"; do echo $((10#${p##*part-})); done | sort -n | uniq)
  for ((i = 0; i <= numbers[-1]; i++)); do
    [[ " ${numbers[*]} " == *" $i "* ]] || missing+=("part-$(printf %02d "$i")")
  done
  [ ${#missing[@]} -eq 0 ] || die "pieces ${missing[*]} missing from $ortgpu (have ${#found[@]})"
  for n in "${numbers[@]}"; do printf '%s\n' "$ortgpu"/*/part-"$(printf %02d "$n")"; done
}

install() {
  local list=() found stamp name site=$ortgpu/site
  found=$(pieces) || exit 2
  mapfile -t list <<< "$found"
  stamp="${#list[@]} pieces, sha256 $(cat "${list[@]}" | sha256sum | cut -d' ' -f1)"
  if [ -f "$site/.pieces" ] && [ "$(cat "$site/.pieces")" = "$stamp" ]; then
    echo "onnxruntime-gpu: reused $site ($stamp)"
    return
  fi
  cat "${list[@]}" > "$ortgpu/joined.zip"
  # pip takes a wheel by its file name: read it from the wheel's own WHEEL file
  name=$("$python" - "$ortgpu/joined.zip" <<'EOF'
import sys
import zipfile

try:
    wheel = zipfile.ZipFile(sys.argv[1])
    info = next(n for n in wheel.namelist() if n.endswith(".dist-info/WHEEL"))
    tag = next(line[5:] for line in wheel.read(info).decode().splitlines() if line.startswith("Tag: "))
except (zipfile.BadZipFile, StopIteration, OSError) as e:
    sys.exit(f"gpu_check.sh: the joined pieces are not a wheel ({e or type(e).__name__}): a piece is missing, "
             "truncated or from another download")
print(f"{info.split('/')[0].removesuffix('.dist-info')}-{tag.strip()}.whl")
EOF
) || { rm -f "$ortgpu/joined.zip"; exit 2; }
  mv "$ortgpu/joined.zip" "$ortgpu/$name"
  rm -rf "$site"
  if ! "$python" -m pip install -q --no-deps --no-index --no-compile --disable-pip-version-check \
      --target "$site" "$ortgpu/$name" > "$ortgpu/pip.log" 2>&1; then
    rm -rf "$site" "$ortgpu/$name"
    die "pip could not install the joined pieces (a piece damaged or from another download?):" \
      "$(grep -v '^\s*$' "$ortgpu/pip.log" | tail -1)"
  fi
  rm -f "$ortgpu/$name"
  echo "$stamp" > "$site/.pieces"
  echo "onnxruntime-gpu: installed $name into $site ($stamp)"
}

run_check() {
  local data=$root/benchmarks/.cache/gpu-data/scifact args=()
  install
  export PYTHONPATH="$ortgpu/site${PYTHONPATH:+:$PYTHONPATH}"
  if [ -f "$carry/scifact/corpus.jsonl.gz" ] && [ ! -f "$data/corpus.jsonl" ]; then
    mkdir -p "$data/qrels"
    "$python" -c "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$carry/scifact/corpus.jsonl.gz" "$data/corpus.jsonl"
    cp "$carry/scifact/queries.jsonl" "$data/"
    cp "$carry/scifact/qrels/test.tsv" "$data/qrels/"
  fi
  [ -f "$carry/export/splade.json" ] && args+=(--export "$carry/export")
  [ -f "$data/corpus.jsonl" ] && args+=(--data "$data")
  local out=${OUT:-$root/benchmarks/results}
  mkdir -p "$out"
  cd "$root"
  PYTHONUNBUFFERED=1 "$python" -m benchmarks.gpu_check "${args[@]}" "$@" 2>&1 | tee "$out/gpu-check.log"
}

pack() {
  local whl dirs=() d
  rm -rf "$ortgpu" && mkdir -p "$ortgpu/dl"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$ortgpu/dl" "onnxruntime-gpu==${ORT_VERSION:-1.31.1}"
  whl=$(ls "$ortgpu"/dl/*.whl)
  split -b "${PIECE_MB:-40}m" -d -a 2 "$whl" "$ortgpu/part-"
  for p in "$ortgpu"/part-*; do mkdir -p "$ortgpu/${p##*part-}" && mv "$p" "$ortgpu/${p##*part-}/"; done
  rm -rf "$ortgpu/dl"
  (cd "$root" && "$python" -m benchmarks.gpu_carry)
  mapfile -t dirs < <(cd "$root" && ls -d .ortgpu/[0-9]*)
  echo "$(basename "$whl") in ${#dirs[@]} pieces; the calls, back to back:"
  for d in "${dirs[@]:0:${#dirs[@]}-1}"; do
    echo "  run(command=\"ls -l $d\", carry=[\"$d\"], timeout_s=60)"
  done
  echo "  run(command=\"bash benchmarks/gpu_check.sh run\", carry=[\"${dirs[-1]}\", \"benchmarks/.cache/gpu-carry\"]," \
    "timeout_s=480)"
}

case "${1:-}" in
  pack) pack ;;
  install) install ;;
  run) shift; run_check "$@" ;;
  *) die "usage: bash benchmarks/gpu_check.sh pack | install | run [gpu_check arguments]" ;;
esac
