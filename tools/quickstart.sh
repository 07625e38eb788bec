#!/usr/bin/env bash
# The main job, from a fresh clone: install rillet in .venv, start a local cluster,
# create a topic, produce three records and consume them. The cluster keeps running
# afterwards; `.venv/bin/rillet cluster stop` stops it (data is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q '.[fast]' || .venv/bin/pip install -q .   # uvloop if it installs (optional)
rillet=.venv/bin/rillet
$rillet cluster start
$rillet topic describe quickstart >/dev/null 2>&1 || $rillet topic create quickstart
printf 'Hello, rillet\nrecords are kept in order\nand survive a restart\n' | $rillet produce quickstart
$rillet consume quickstart -B -d
echo "The cluster is running: try '$rillet partition list', then '$rillet cluster stop'." >&2
