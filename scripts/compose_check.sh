#!/usr/bin/env bash
# docker-compose.yml run for real under Podman, on this host: build the image (scripts/build_images.sh),
# make the sites' and the planner's folders as docs/journey.md does, bring the deployment up step by
# step (the compose file's header), run two rounds, let each site decide in its own container, check
# what they leave (and that no container mounts another site's folder), and tear everything down,
# leaving no container, network or volume that was not there before. Needs root, podman, runc,
# debootstrap and podman-compose 1.1 or newer (PODMAN_COMPOSE names it; else .venv's or PATH's).
#
#     bash scripts/compose_check.sh            # prints the seconds of each part; exit 0 when all holds
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/fedstock-compose.XXXXXX)
export CONTAINERS_CONF=${WORK}/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
BIN=${FEDSTOCK_BIN:-$ROOT/.venv/bin}
PC="${PODMAN_COMPOSE:-$(PATH=$BIN:$PATH command -v podman-compose)} -p fedstock-check"
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
engine_state() { { podman ps -a -q; podman network ls -q; podman volume ls -q; } | sort; }
engine_state > "$WORK/before.txt"
down() { $PC -f docker-compose.yml --profile setup --profile run down -t 20 > "$WORK/down.log" 2>&1 || true; }
trap down EXIT
$PC -f docker-compose.yml up -d --no-build superlink > "$WORK/up.log" 2>&1
$PC -f docker-compose.yml --profile setup run --rm register >> "$WORK/up.log" 2>&1
for n in 0 1 2; do $PC -f docker-compose.yml up -d --no-build supernode-$n >> "$WORK/up.log" 2>&1; done
t2=$(date +%s)
# what each running container mounts, for the check below
podman ps --filter label=io.podman.compose.project=fedstock-check --format '{{.Names}}' |
  while read -r name; do
    echo "$name $(podman inspect --format '{{range .Mounts}}{{.Source}} {{end}}' "$name")"
  done > "$WORK/mounts.txt"
$PC -f docker-compose.yml --profile run run --rm planner > "$WORK/planner.log" 2>&1
t3=$(date +%s)
# each site, in its own container: today's decisions from its forecast, its report and status
for n in 0 1 2; do
  $PC -f docker-compose.yml exec -T supernode-$n fedstock-node replenish --forecasts /node/out/forecasts.parquet \
    --stock /node/stock.csv --out /node/out >> "$WORK/sites.log" 2>&1
  $PC -f docker-compose.yml exec -T supernode-$n fedstock-node report --node /node --stock /node/stock.csv \
    >> "$WORK/sites.log" 2>&1
  $PC -f docker-compose.yml exec -T supernode-$n fedstock-node status --node /node >> "$WORK/sites.log" 2>&1
done
t4=$(date +%s)
for service in superlink supernode-0; do $PC -f docker-compose.yml logs "$service" > "$WORK/$service.log" 2>&1; done
run=$(ls "$WORK/deploy/planner/runs" | grep -E '^[0-9]+$' | head -1)
"$BIN/python" - "$WORK/deploy" "$run" "$WORK" <<'PY'
import csv, json, re, sys
from pathlib import Path
deploy, run, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
mounts = (work / "mounts.txt").read_text().splitlines()
logs = {  # without the terminal's colours
    name: re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", (work / f"{name}.log").read_text())
    for name in ("superlink", "supernode-0", "up", "planner")
}
said = {  # what docs/planner.md says each service logs
    "superlink": ["flower-superlink"],
    "up": ["site warehouse-00 registered", "site warehouse-02 registered"],
    "supernode-0": ["ok key", "ok TLS", "round 2: update sent", "forecast"],
    "planner": [f"run {run}", "report written"],
}
for name, lines in said.items():
    missing = [line for line in lines if line not in logs[name]]
    assert not missing, f"{name}'s log lacks {missing}"
progress = json.loads((deploy / "planner" / "runs" / run / "progress.json").read_text())
trained = [h for h in progress["history"] if h["phase"] == "train"]
assert progress["last_round"] == 2 and [h["replies"] for h in trained] == [3, 3], progress["last_round"]
assert (deploy / "planner" / "network.csv").is_file() and (deploy / "planner" / "runs" / run / "report.html").is_file()
for n in range(3):
    out = deploy / f"warehouse-0{n}" / "out"
    assert (out / "forecasts.parquet").is_file() and (out / "network_totals.parquet").is_file(), out
    with (out / "decisions.csv").open() as f:
        decided = list(csv.DictReader(f))
    assert decided and all(row["status"] and row["reason"] for row in decided), f"{out}/decisions.csv"
    assert (out / "strategy.csv").is_file() and (out / "report.html").is_file(), out
seen = {line.split()[0]: line.split()[1:] for line in mounts if line.strip()}
assert len(seen) == 4, f"expected the SuperLink and three SuperNodes running, saw {sorted(seen)}"
for name, sources in seen.items():
    sites = {Path(s).name for s in sources if "/warehouse-" in s}
    mine = {f"warehouse-0{name.split('supernode-')[1][0]}"} if "supernode-" in name else set()
    assert sites == mine, f"{name} mounts {sorted(sites)} (its own: {sorted(mine)})"
held = [p for p in (deploy / "planner").rglob("*") if p.is_file()]
assert not [p for p in held if p.name in ("secret.ctx", "supernode.key")], "a site's secret at the planner's"
print(f"run {run}: 2 rounds of 3 sites, network forecast and report written; no site secret at the planner's")
print("each site decided in its own container (decisions.csv, report.html); no container mounts another site's folder")
PY
down
trap - EXIT
left=$(engine_state | comm -13 "$WORK/before.txt" -)
[ -z "$left" ] || { echo "left behind (containers, networks, volumes): $left"; exit 1; }
echo "no container, network or volume left behind"
echo "image build $((t1 - t0)) s; setup and start $((t2 - t1)) s; planner run $((t3 - t2)) s; sites' decisions $((t4 - t3)) s; total $(( $(date +%s) - t0 )) s"
