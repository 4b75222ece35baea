#!/usr/bin/env bash
# docker-compose.yml run for real under Podman, on this host: build the image (scripts/build_images.sh),
# make the sites' and the planner's folders as docs/journey.md does, bring the deployment up step by
# step (the compose file's header), run two rounds, check what they leave, and tear everything down.
# Needs root, podman, runc, debootstrap and podman-compose 1.1 or newer (PODMAN_COMPOSE names it).
#
#     bash scripts/compose_check.sh            # prints the seconds of each part; exit 0 when all holds
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PC=${PODMAN_COMPOSE:-podman-compose}
WORK=$(mktemp -d /tmp/fedstock-compose.XXXXXX)
export CONTAINERS_CONF=${WORK}/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
BIN=${FEDSTOCK_BIN:-$ROOT/.venv/bin}
t0=$(date +%s)
WORK=$WORK/images bash "$ROOT/scripts/build_images.sh"
t1=$(date +%s)
cp "$ROOT/docker-compose.yml" "$WORK/"
mkdir -p "$WORK/deploy/planner/site-keys" "$WORK/deploy/planner/runs"
cd "$WORK/deploy"
"$BIN/fedstock-planner" certs --out planner/certs --host 127.0.0.1 > /dev/null
for n in 0 1 2; do "$BIN/fedstock-node" init --out warehouse-0$n --synthetic $n --items 6 --days 400 > /dev/null; done
"$BIN/fedstock-node" keygen --out warehouse-00/keys --publish planner/keys > /dev/null
for n in 1 2; do mkdir -p warehouse-0$n/keys; cp warehouse-00/keys/secret.ctx warehouse-00/keys/keys.json warehouse-0$n/keys/; done
for n in 0 1 2; do
  "$BIN/fedstock-node" authkey --node warehouse-0$n > /dev/null
  cp warehouse-0$n/keys/supernode.key.pub planner/site-keys/warehouse-0$n.pub
done
cd "$WORK"
down() { $PC -f docker-compose.yml --profile setup --profile run down -t 20 > "$WORK/down.log" 2>&1 || true; }
trap down EXIT
$PC -f docker-compose.yml up -d --no-build superlink > "$WORK/up.log" 2>&1
$PC -f docker-compose.yml --profile setup run --rm register >> "$WORK/up.log" 2>&1
$PC -f docker-compose.yml up -d --no-build supernode-0 supernode-1 supernode-2 >> "$WORK/up.log" 2>&1
t2=$(date +%s)
$PC -f docker-compose.yml --profile run run --rm planner > "$WORK/planner.log" 2>&1
t3=$(date +%s)
run=$(ls "$WORK/deploy/planner/runs" | grep -E '^[0-9]+$' | head -1)
"$BIN/python" - "$WORK/deploy" "$run" <<'PY'
import json, sys
from pathlib import Path
deploy, run = Path(sys.argv[1]), sys.argv[2]
progress = json.loads((deploy / "planner" / "runs" / run / "progress.json").read_text())
trained = [h for h in progress["history"] if h["phase"] == "train"]
assert progress["last_round"] == 2 and [h["replies"] for h in trained] == [3, 3], progress["last_round"]
assert (deploy / "planner" / "network.csv").is_file() and (deploy / "planner" / "runs" / run / "report.html").is_file()
for n in range(3):
    out = deploy / f"warehouse-0{n}" / "out"
    assert (out / "forecasts.parquet").is_file() and (out / "network_totals.parquet").is_file(), out
held = [p for p in (deploy / "planner").rglob("*") if p.is_file()]
assert not [p for p in held if p.name in ("secret.ctx", "supernode.key")], "a site's secret at the planner's"
print(f"run {run}: 2 rounds of 3 sites, network forecast and report written; no site secret at the planner's")
PY
down
trap - EXIT
left=$(podman ps -a -q | wc -l)
[ "$left" = 0 ] || { echo "containers left behind: $left"; exit 1; }
echo "image build $((t1 - t0)) s; setup and start $((t2 - t1)) s; planner run $((t3 - t2)) s; total $(( $(date +%s) - t0 )) s"
