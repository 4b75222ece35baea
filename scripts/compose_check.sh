#!/usr/bin/env bash
# docker-compose.yml run for real under Podman, on this host: build the image (scripts/build_images.sh),
# make the sites' and the planner's folders (the commands of docs/planner.md, "With containers"),
# bring the deployment up step by step, run two rounds, let each site decide in its own container,
# check what they leave (every service's log, each site's decisions, that no container mounts
# another site's folder or the CA's key), and tear everything down, leaving no container, network
# or volume that was not there before. On failure it names the step and shows its logs.
# Needs root, podman, runc, debootstrap and podman-compose 1.1 or newer (PODMAN_COMPOSE names it;
# else .venv's or PATH's).
#
#     bash scripts/compose_check.sh            # prints the seconds of each part; exit 0 when all holds
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FEDSTOCK_BIN:-$ROOT/.venv/bin}
export PATH="$BIN:$PATH"  # fedstock's commands, as in the docs
pc=${PODMAN_COMPOSE:-$(command -v podman-compose || true)}
[ -n "$pc" ] || { echo "podman-compose not found (pip install 'podman-compose>=1.1')"; exit 1; }
PC="$pc -p fedstock-check"
WORK=$(mktemp -d /tmp/fedstock-compose.XXXXXX)
export CONTAINERS_CONF=${WORK}/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
fail() {
  echo "compose check failed at line $1; its files are in $WORK"
  for f in "$WORK"/*.log "$WORK"/images/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done
}
trap 'fail $LINENO' ERR
t0=$(date +%s)
WORK=$WORK/images bash "$ROOT/scripts/build_images.sh"
t1=$(date +%s)
cp "$ROOT/docker-compose.yml" "$WORK/"
cd "$WORK"
{  # the folders, exactly as docs/planner.md gives them
mkdir -p deploy/planner/site-keys deploy/planner/runs deploy/planner/out && cd deploy
fedstock-planner certs --out planner/certs --host 127.0.0.1
for n in 0 1 2; do fedstock-node init --out warehouse-0$n --synthetic $n --items 6 --days 400; done
fedstock-node keygen --out warehouse-00/keys --publish planner/keys
for n in 1 2; do mkdir -p warehouse-0$n/keys; cp warehouse-00/keys/secret.ctx warehouse-00/keys/keys.json warehouse-0$n/keys/; done
for n in 0 1 2; do
  fedstock-node authkey --node warehouse-0$n
  cp warehouse-0$n/keys/supernode.key.pub planner/site-keys/warehouse-0$n.pub
done
cd ..
} > "$WORK/folders.log" 2>&1
cp deploy/planner/certs/ca.crt deploy/ca.crt  # the CA as a site is handed it (SITE_CA)
export SITE_CA=./deploy/ca.crt
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
run=$(ls deploy/planner/runs | grep -E '^[0-9]+$' | head -1 || true)
[ -n "$run" ] || { echo "the planner's run left no run folder in deploy/planner/runs"; false; }
python - "$WORK/deploy" "$run" "$WORK" <<'PY'
import csv, json, re, sys
from pathlib import Path
deploy, run, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
logs = {  # without the terminal's colours
    name: re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", (work / f"{name}.log").read_text())
    for name in ("superlink", "supernode-0", "up", "planner")
}
said = {  # what docs/planner.md says each service logs
    "superlink": ["flower-superlink"],
    "up": ["site warehouse-00 registered", "site warehouse-01 registered", "site warehouse-02 registered"],
    "supernode-0": ["ok key", "ok TLS", "ok data de-identified", "round 2: update sent", "encrypted totals sent"],
    "planner": [f"run {run}", "round 2: 3 nodes trained", "network forecast: opened over 3 sites", "report written"],
}
for name, lines in said.items():
    missing = [line for line in lines if line not in logs[name]]
    assert not missing, f"{name}'s log lacks {missing}"
progress = json.loads((deploy / "planner" / "runs" / run / "progress.json").read_text())
trained = [h for h in progress["history"] if h["phase"] == "train"]
assert progress["last_round"] == 2 and [h["replies"] for h in trained] == [3, 3], progress["last_round"]
assert (deploy / "planner" / "out" / "network.csv").is_file(), "no network forecast"
assert (deploy / "planner" / "runs" / run / "report.html").is_file(), "no planner's report"
for n in range(3):
    out = deploy / f"warehouse-0{n}" / "out"
    assert (out / "forecasts.parquet").is_file() and (out / "network_totals.parquet").is_file(), out
    with (out / "decisions.csv").open() as f:
        decided = list(csv.DictReader(f))
    assert decided and all(row["status"] and row["reason"] for row in decided), f"{out}/decisions.csv"
    assert (out / "strategy.csv").is_file() and (out / "report.html").is_file(), out
seen = {line.split()[0]: [Path(s) for s in line.split()[1:]] for line in (work / "mounts.txt").read_text().splitlines()}
assert len(seen) == 4, f"expected the SuperLink and three SuperNodes running, saw {sorted(seen)}"
sites = {f"warehouse-0{n}": deploy / f"warehouse-0{n}" for n in range(3)}
ca_key = deploy / "planner" / "certs" / "ca.key"
for name, sources in seen.items():
    own = f"warehouse-0{name.split('supernode-')[1][0]}" if "supernode-" in name else None
    def holds(target: Path) -> bool:  # a mount of the target itself or of a folder above it
        return any(s == target or s in target.parents for s in sources)
    others = [site for site, folder in sites.items() if site != own and holds(folder)]
    assert not others, f"{name} mounts {others}, another site's folder"
    assert own is None or holds(sites[own]), f"{name} lacks its own folder"
    assert not holds(ca_key), f"{name} mounts the CA's key"
held = [p for p in (deploy / "planner").rglob("*") if p.is_file()]
assert not [p for p in held if p.name in ("secret.ctx", "supernode.key")], "a site's secret at the planner's"
print(f"run {run}: 2 rounds of 3 sites, network forecast and report written; no site secret at the planner's")
print("each site decided in its own container (decisions.csv, report.html); no container mounts another site's folder")
PY
down
trap - EXIT
left=$(engine_state | comm -13 "$WORK/before.txt" -)
[ -z "$left" ] || { echo "left behind (containers, networks, volumes): $left"; false; }
echo "no container, network or volume left behind"
trap - ERR
rm -rf "$WORK"  # the sites' keys and data of the check
echo "image build $((t1 - t0)) s; setup and start $((t2 - t1)) s; planner run $((t3 - t2)) s; sites' decisions $((t4 - t3)) s; total $(( $(date +%s) - t0 )) s"
