"""What CKKS costs: parameters, bytes, node and coordinator time, round wall time, 100-node scale.

    .venv/bin/python scripts/benchmark_he.py [--quick] [--data-root ../shared/data]

Sections (each a table in BENCHMARKS.md, "CKKS overhead"; ``--quick`` prints a smaller run and
writes nothing):
1. parameters: bytes and precision for each data-prime size, the chosen one marked;
2. one update, for the project's model and a 1M-parameter variant: encrypt, decrypt, bytes;
3. the coordinator's streamed sum of 10, 45 and 100 updates: time and peak memory (own process);
4. full rounds through the real ServerApp/ClientApp on Walmart stores, CKKS vs plain Flower FedAvg
   (``scripts/plaintext_fedavg.py``) over the same node code and seeds, interleaved, 5 repeats;
5. 100 synthetic nodes end to end.
The last line printed is one JSON object with the headline ratios.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import crypto  # noqa: E402
from scripts.he_measure import aggregation_probe, parameter_sweep, update_costs  # noqa: E402
from scripts.he_rounds import round_times, scale_run  # noqa: E402

CHOSEN = crypto.DEFAULT_COEFF_BITS[0]


def _md(rows: list[dict], cols: list[str]) -> list[str]:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return [
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows),
    ]


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0))
    return f"{cores} CPU cores ({platform.machine()}), torch {torch.__version__}, TenSEAL 0.3"


def report(quick: bool, data_root: Path, out: Path) -> tuple[list[str], dict]:
    say = click.echo
    sweep = parameter_sweep([CHOSEN] if quick else [50, 52, 54, 56, 58, 60], out / "sweep")
    say(json.dumps(sweep, indent=1))
    key_dir = out / "keys"
    crypto.keygen(key_dir)
    updates = update_costs(key_dir, repeats=3 if quick else 7)
    say(json.dumps(updates, indent=1))
    sizes = ["project"] if quick else ["project", "1M"]
    aggregation = [
        aggregation_probe(key_dir, size, count, repeats=3, work=out / "agg")
        for size in sizes
        for count in (10, 45, 100)
    ]
    say(json.dumps(aggregation, indent=1))
    counts = (3,) if quick else (10, 45)
    rounds = round_times(data_root, out / "rounds", counts, repeats=2 if quick else 5, quick=quick, say=say)
    say(json.dumps(rounds, indent=1))
    scale = None if quick else scale_run(out / "scale", nodes=100, say=say)
    say(json.dumps(scale, indent=1))
    biggest = max(counts)
    ratio = next(r for r in rounds if r["nodes"] == biggest)["ratio"]
    agg100 = next(a for a in aggregation if a["model"] == "project" and a["updates"] == 100)
    headline = {
        "encrypted_vs_plain_round_time": ratio,
        "round_nodes": biggest,
        "upload_bytes_vs_float32": updates[0]["bytes_ratio"],
        "aggregate_100_updates_s": agg100["median_s"],
        "aggregate_100_updates_peak_mb": agg100["peak_mb"],
        "targets_met": ratio <= 1.25 and updates[0]["bytes_ratio"] <= 8 and agg100["median_s"] < 2,
    }
    lines = tables(sweep, updates, aggregation, rounds, scale, headline)
    return lines, headline


def tables(sweep, updates, aggregation, rounds, scale, headline) -> list[str]:
    cmd = ".venv/bin/python scripts/benchmark_he.py --data-root ../shared/data"
    lines = [
        "## CKKS overhead",
        "",
        f"Written by `scripts/benchmark_he.py` on {time.strftime('%Y-%m-%d')}; {machine()}. "
        f"Command: `{cmd}`. Medians over repeats; ratios measured side by side in this run.",
        "",
        f"Chosen: N=4096, coefficient moduli {list(crypto.DEFAULT_COEFF_BITS)} (76 of the 109 bits "
        f"SEAL's 128-bit table allows at N=4096), scale 2^{crypto.DEFAULT_SCALE_BITS}; no Galois or "
        "relinearization keys are kept. Sweep: data prime q bits, scale 2^(q−21) (so a sum may reach "
        "2^19); precision = max |CKKS − plaintext FedAvg| / max |w| over the project model's weights.",
        "",
        *_md(
            sweep,
            [
                "data_prime_bits",
                "scale_bits",
                "bytes_per_value_vs_float32",
                "rel_err_100_nodes",
                "rel_err_2_small_nodes",
                "public_context_kb",
                "chosen",
            ],
        ),
        "",
        "### One update (node side)",
        "",
        *_md(
            updates,
            [
                "model",
                "parameters",
                "float32_kb",
                "encrypted_kb",
                "bytes_ratio",
                "reply_msg_ratio",
                "encrypt_s",
                "decrypt_s",
            ],
        ),
        "",
        "### Coordinator: streamed sum of N updates (own process; update bytes held in memory first)",
        "",
        *_md(aggregation, ["model", "updates", "median_s", "ms_per_update", "peak_mb", "held_replies_mb"]),
        "",
        "### Full rounds through the real apps (Walmart stores as nodes, 2 rounds, round 2 timed)",
        "",
        *_md(
            rounds,
            [
                "nodes",
                "plain_s",
                "ckks_s",
                "ratio",
                "ckks_coordinator_s",
                "plain_coordinator_s",
                "ckks_reply_mb",
                "plain_reply_mb",
                "repeats",
            ],
        ),
        "",
    ]
    if scale:
        lines += ["### 100 synthetic nodes, end to end (CKKS)", "", *_md([scale], list(scale)), ""]
    lines += ["Headline: `" + json.dumps(headline) + "`"]
    return lines


@click.command()
@click.option("--quick", is_flag=True, help="Smoke check (under 3 minutes on 2 cores); writes nothing.")
@click.option("--data-root", type=click.Path(path_type=Path), default=ROOT.parent / "shared" / "data")
@click.option("--work", type=click.Path(path_type=Path), default=None, help="Scratch folder (default: temp).")
def main(quick: bool, data_root: Path, work: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lines, headline = report(quick, data_root, Path(work or tmp))
    if not quick:
        from common.evaluation import write_marked_section

        write_marked_section(ROOT / "BENCHMARKS.md", "he-overhead", lines)
    click.echo("\n".join(lines))
    click.echo(json.dumps(headline))


if __name__ == "__main__":
    main()
