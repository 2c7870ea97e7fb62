#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine (as root), installs what is missing, builds
# the guest images and the supervisor, then starts a supervisor on an embedded default
# (data dir under ~/.cache, auto isolation), deploys a sample function and invokes it,
# printing the response and the REPORT line.
set -euo pipefail
cd "$(dirname "$0")"
image-build/build.sh
cargo build --release --quiet -p supervisor -p vmm
exec target/release/supervisor demo "$@"
