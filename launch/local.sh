#!/usr/bin/env bash
# Single-host launcher: Ray actors on this machine's CPUs, the learner on its accelerator
# (or CPU). The same as `make train ARGS="..."`: bootstraps .venv, then runs `rltpu train`.
#   launch/local.sh --env CartPole-v1 --num-actors 4
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory .venv/.installed
exec .venv/bin/rltpu train "$@"
