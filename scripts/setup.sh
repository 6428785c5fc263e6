#!/usr/bin/env bash
# Create .venv with neuralgraph, the agent, Snakemake (+ SLURM executor) and the test tools.
#
# torch: `pip install torch==<version>` is the ordinary way; on a CUDA cluster node it pulls
# the CUDA build from PyPI, on the project's CPU build machines it takes the CPU wheel that
# lies on disk. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.6.0" or a
# `--index-url https://download.pytorch.org/whl/cu124 torch` pair) when your cluster needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

# bubblewrap: the sandbox of training-loop code written by the agent (agent.code_modification:
# sandboxed, the default). Without it code modifications are refused and config mutations go on.
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing bubblewrap (the sandbox of agent-written code)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
  else
    echo "[setup] note: bubblewrap (bwrap) is missing: install it (e.g. sudo apt-get install bubblewrap) to let the agent edit code"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $TORCH_SPEC
fi
echo "[setup] installing neuralgraph + agent (editable) with test tools"
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
"$VENV/bin/python" -c "import torch, torch_geometric, snakemake, anthropic; print('[setup] ok: torch', torch.__version__, '| cuda', torch.cuda.is_available())"
