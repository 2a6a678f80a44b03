"""What a Flower node imports per message kind: ``python -X importtime``, one fresh process each.

Flower 1.42 starts a new ``flwr-clientapp`` process for every message a SuperNode
receives, so a node pays its imports on every message. This script records the
messages of a small job (the benchmark job of ``flower_overhead.py``: 60 users,
80 items, 10 per round, SecAgg, 3 nodes; single sessions and key sessions) on the
in-memory transport, then replays each kind of message in a fresh interpreter
that first imports what every ``flwr-clientapp`` imports
(``flwr.supernode.cli.flwr_clientapp``) and our ClientApp, then handles the
message through the same ``dispatch`` the ClientApp calls. Reported per message
kind: the process's wall time, the import time (sum of ``-X importtime`` self
times, median of ``--repeat`` runs) split into Flower, torch (``torch._dynamo``
apart), numpy, cryptography, ours (``secure_fedrec`` + ``protocols``), the
accountants' libraries (scipy, dp_accounting, opacus), pandas and the rest; and
the handler's own seconds.

    python benchmarks/node_imports.py [--repeat 3]

Writes benchmarks/results/node_imports.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import git_commit

JOB = {
    "seed": 0, "training.rounds": 4, "data.synthetic.n_users": 60, "data.synthetic.n_items": 80,
    "training.clients_per_round": 10.0, "training.local_epochs": 2, "aggregation.threshold_fraction": 0.6,
    "privacy.unit": "none", "training.sampling": "fixed", "aggregation.bits": 32,
    "aggregation.protocol": "secagg", "training.dropout_rate": 0.0, "training.straggler_rate": 0.0,
}

GROUPS = (  # (label, module prefixes): the first match wins, in this order
    ("torch._dynamo", ("torch._dynamo",)),
    ("torch", ("torch", "functorch", "sympy", "mpmath", "networkx", "jinja2", "filelock", "fsspec")),
    ("Flower", ("flwr", "grpc", "google", "protobuf", "fastapi", "starlette", "uvicorn", "pydantic",
                "sqlalchemy", "ray", "click", "typer", "rich", "iterators", "pathspec", "tomli",
                "requests", "urllib3", "certifi", "idna", "charset_normalizer", "anyio", "httpx",
                "h11", "httpcore", "cryptography.hazmat.bindings", "yaml")),
    ("numpy", ("numpy",)),
    ("cryptography", ("cryptography",)),
    ("ours", ("secure_fedrec", "protocols")),
    ("accounting libs", ("scipy", "dp_accounting", "opacus", "absl", "attr", "mpmath")),
    ("pandas", ("pandas", "pytz", "dateutil", "tzdata")),
)

REPLAY = r"""
import pickle, sys, time
t0 = time.perf_counter()
import flwr.supernode.cli.flwr_clientapp  # what every flwr-clientapp process imports first
import secure_fedrec.engines.flower.client_app  # noqa: F401  our ClientApp module
from secure_fedrec.engines.flower.dispatch import dispatch
t1 = time.perf_counter()
message_type, request, blob, node_config = pickle.load(open(sys.argv[1], "rb"))
reply, _ = dispatch(message_type, request, blob, node_config)
t2 = time.perf_counter()
assert not reply.get("errors"), reply.get("errors")
print("TIMES", t1 - t0, t2 - t1, int("torch._dynamo" in sys.modules), int("pandas" in sys.modules),
      int("scipy" in sys.modules), int("dp_accounting" in sys.modules), int("torch" in sys.modules))
"""


def record_messages(key_rounds: int, folder: Path) -> dict[str, Path]:
    """Run the job on the in-memory transport; keep partition 0's first message of each kind."""
    from secure_fedrec.config import load_config
    from secure_fedrec.engines.flower.coordinator import FlowerCoordinator
    from secure_fedrec.engines.flower.memory import MemoryTransport
    from secure_fedrec.inputs import load_data, make_split

    kept: dict[str, Path] = {}

    class Recording(MemoryTransport):
        def exchange(self, message_type, requests, *, deadline, round_index):
            if 0 in requests:
                request = requests[0]
                stage = request.get("stage", "")
                kind = message_type if message_type == "evaluate" else f"{message_type}:{stage}"
                if message_type == "train":
                    kind += " (setup)" if stage == "advertise_keys" and key_rounds > 1 else ""
                    kind += " + evaluation" if request.get("evaluate") else ""
                if kind not in kept:
                    path = folder / f"{len(kept)}.pkl"
                    node_config = {"partition-id": 0, "num-partitions": self.num_partitions}
                    path.write_bytes(pickle.dumps((message_type, dict(request), self.states[0], node_config)))
                    kept[kind] = path
            return super().exchange(message_type, requests, deadline=deadline, round_index=round_index)

    config = load_config(None, {**JOB, "aggregation.key_rounds": key_rounds})
    data = load_data(config)
    query = folder / "query.pkl"
    query.write_bytes(pickle.dumps(("query", {}, b"", {"partition-id": 0, "num-partitions": 3})))
    kept["query"] = query
    FlowerCoordinator(config, data, make_split(config, data), Recording(3), 3).run()
    return kept


def parse_importtime(stderr: str) -> dict[str, float]:
    """Sum ``-X importtime`` self times per group: by the module's own name first, else by the
    top-level import that pulled it in (Flower's dependencies are imported under ``flwr``)."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip())) // 2
        entries.append((int(own.split(":", 1)[1]) / 1e6, depth, name.strip()))
    roots, root = [], ""
    for _, depth, name in reversed(entries):  # children are printed before their parent
        if depth == 0:
            root = name
        roots.append(root)
    roots.reverse()
    totals = {label: 0.0 for label, _ in GROUPS} | {"other": 0.0}
    for (seconds, _, module), top in zip(entries, roots):
        for label, prefixes in GROUPS:
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                totals[label] += seconds
                break
        else:
            totals["Flower" if top.split(".")[0] in ("flwr", "grpc") else "other"] += seconds
    return totals


def replay(path: Path, repeat: int) -> dict:
    runs = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", REPLAY, str(path)], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=600, check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        times = next(line for line in out.stdout.splitlines() if line.startswith("TIMES")).split()[1:]
        groups = parse_importtime(out.stderr)
        runs.append({"startup_seconds": float(times[0]), "handler_seconds": float(times[1]),
                     "import_seconds": sum(groups.values()), "groups": groups,
                     "dynamo": bool(int(times[2])), "pandas": bool(int(times[3])),
                     "scipy": bool(int(times[4])), "dp_accounting": bool(int(times[5])),
                     "torch": bool(int(times[6]))})
    best = sorted(runs, key=lambda r: r["import_seconds"])[len(runs) // 2]  # the median run
    return {**best, "import_seconds_runs": [r["import_seconds"] for r in runs],
            "handler_seconds_median": statistics.median(r["handler_seconds"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/node_imports.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key_rounds in (1, 3):
            folder = Path(tmp) / f"k{key_rounds}"
            folder.mkdir()
            for kind, path in record_messages(key_rounds, folder).items():
                if key_rounds > 1 and kind == "query":
                    continue
                row = {"key_rounds": key_rounds, "message": kind, **replay(path, args.repeat)}
                rows.append(row)
                print(f"k={key_rounds} {kind}: imports {row['import_seconds']:.2f} s, "
                      f"handler {row['handler_seconds_median']:.2f} s", file=sys.stderr)
    labels = [label for label, _ in GROUPS] + ["other"]
    print("| key_rounds | message | imports (s) | " + " | ".join(labels) + " | handler (s) |")
    print("| ---: | --- | ---: | " + " | ".join("---:" for _ in labels) + " | ---: |")
    for r in rows:
        print(f"| {r['key_rounds']} | {r['message']} | {r['import_seconds']:.2f} | "
              + " | ".join(f"{r['groups'][label]:.2f}" for label in labels)
              + f" | {r['handler_seconds_median']:.2f} |")
    Path(args.out).write_text(json.dumps({
        "job": JOB, "repeat": args.repeat, "rows": rows, "python": platform.python_version(),
        "loadavg_end": os.getloadavg(), "commit": git_commit(ROOT)}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)



if __name__ == "__main__":
    main()
