#!/usr/bin/env bash
# HR@1/3/5 on all 943 ml-100k held-out users of each LLM teacher (MARS, MACRec, α-UMi) on SmolLM2,
# and of the student SFT-trained on that teacher's kept episodes; for MACRS, which converses
# (ConversationalRec-v0, configs/macrs_llm.yaml), the success rate with the simulated user, against
# the rule-based and random conversational policies. For each system in turn, in
# runs/llm_teachers/<system>: the teacher plays TEACH_TASKS training tasks (`recrl teach`), the
# student learns its hits (`recrl sft`), then `recrl eval` plays the teacher and the student on
# every held-out user. Hours of a 2-core CPU (a teacher plays about 0.2 episodes/s); every step saves
# as it goes, so a killed run started again continues where it stopped.
#   bash bench/llm_teachers.sh                  # all four systems
#   bash bench/llm_teachers.sh mars             # one of them
#   CONCURRENCY=32 bash bench/llm_teachers.sh macrec   # 32 episodes in flight per worker (default 8)
#   TEACH=0 bash bench/llm_teachers.sh macrec          # only the evaluation of the teacher (and of a student
#                                                      # already trained), not `recrl teach` and `recrl sft`
# bench/llm_teachers/<system>/ keeps the saved shards of a teacher evaluation that spans machines: they
# are copied into the run first (nothing there is overwritten), and the evaluation continues after them.
# Each system ends with runs/llm_teachers/<system>/compare.md: HR@1/3/5 of random, pop, the teacher
# and the student, and paired bootstrap intervals of student - teacher and teacher - random (MACRS:
# success, compared as hr@1, against crs_random). A teacher
# that hits no training task leaves no SFT data: it is evaluated alone, without a student.
set -euo pipefail
cd "$(dirname "$0")/.."
RECRL=${RECRL:-.venv/bin/recrl}
PYTHON=${PYTHON:-.venv/bin/python}
SFT_DONE='import sys; from launch import config, stages
sys.exit(0 if stages.is_done(config.load_config(sys.argv[1], sys.argv[2:]), "sft") else 1)'
KEPT='import json, sys; print(json.load(open(sys.argv[1]))["kept"])'
TEACH_TASKS=${TEACH_TASKS:-256}
PORT=${PORT:-8000}
CONCURRENCY=${CONCURRENCY:-8}  # episodes (and requests) in flight per teacher worker; the server batches both workers'
SYSTEMS=("$@")
[ ${#SYSTEMS[@]} -gt 0 ] || SYSTEMS=(mars macrec alpha_umi macrs)

if ! curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null; then
    "$RECRL" serve --model smollm2-135m-instruct --port "$PORT" --max-batch $((2 * CONCURRENCY)) > "runs/llm_teachers-serve.log" 2>&1 &
    server=$!
    trap 'kill $server' EXIT
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
        kill -0 $server 2> /dev/null || { echo "recrl serve died: see runs/llm_teachers-serve.log" >&2; exit 1; }
        sleep 1
    done
fi

for system in "${SYSTEMS[@]}"; do
    run=runs/llm_teachers/$system
    config=configs/mars_llm.yaml methods=[random,pop,teacher,student_sft] baseline=random
    metrics=(--metric hr@1 --metric hr@3 --metric hr@5)
    if [ "$system" = macrs ]; then  # conversations: an accepted one counts as a hit at 1
        config=configs/macrs_llm.yaml methods=[crs_rules,crs_random,teacher,student_sft] baseline=crs_random
        metrics=(--metric hr@1)
    fi
    args=(--config "$config" "run_dir=$run" "teacher.system=$system" "teacher.num_tasks=$TEACH_TASKS"
          "teacher.backend.base_url=http://127.0.0.1:$PORT/v1" "teacher.concurrency=$CONCURRENCY"
          "teacher.backend.concurrency=$CONCURRENCY")
    [ "$system" != alpha_umi ] || args+=(env.plan_turns=true)
    echo "== $system: teacher on $TEACH_TASKS training tasks, SFT, then the teacher and the student on every held-out user"
    pairs=(student_sft-teacher "teacher-$baseline")
    if [ -d "bench/llm_teachers/$system" ]; then
        mkdir -p "$run" && cp -rn "bench/llm_teachers/$system/." "$run/"
    fi
    if [ "${TEACH:-1}" = 0 ]; then
        echo "== $system: TEACH=0, so the evaluation alone"
        "$PYTHON" -c "$SFT_DONE" "${args[@]:1}" || pairs=("teacher-$baseline")  # no student trained
    elif "$RECRL" teach "${args[@]}"; then  # replays only the shards not saved yet
        "$PYTHON" -c "$SFT_DONE" "${args[@]:1}" || "$RECRL" sft "${args[@]}"  # SFT only if not done yet
    elif [ "$("$PYTHON" -c "$KEPT" "$run/teacher/card.json")" = 0 ]; then
        echo "== $system kept no episode, so it has no student: only the teacher is evaluated"
        pairs=("teacher-$baseline")
    else
        exit 1
    fi
    # the teacher's and the student's episodes resume from what is saved; random and pop take seconds;
    # a student with no checkpoint is skipped
    "$RECRL" eval "${args[@]}" "eval.methods=$methods" eval.num_tasks=0
    "$RECRL" compare "$run" "${pairs[@]}" "${metrics[@]}" --markdown
done
