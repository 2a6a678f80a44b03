"""Write the notebooks in this folder from the cell lists below (outputs stripped).

The notebooks are generated, not hand-edited, so that they stay small,
reviewable in diffs and free of outputs:

    python notebooks/build_notebooks.py          # rewrite every notebook
    python -m pytest --nbmake notebooks/         # run them top to bottom (CI)

Each runs in well under two minutes on 2 cores at its default size.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


QUICKSTART = [
    md("""
# Quick start: train, secure-aggregate, evaluate

Every user of the recommender is a client holding their own ratings. This
notebook trains a tiny federated matrix-factorisation model on synthetic
ratings, shows what one secure-aggregation round does with client updates,
and compares the federated model with its centralized twin.
Command-line equivalent: `secure-fedrec run --set training.rounds=5 ...`.
"""),
    code("""
from secure_fedrec.config import load_config
from secure_fedrec.runner import load_data, make_split, run_job

TINY = {
    "data.synthetic.n_users": 60, "data.synthetic.n_items": 80,
    "data.synthetic.mean_ratings_per_user": 20,
    "model.dim": 8, "training.rounds": 5, "training.clients_per_round": 20,
    "training.local_epochs": 2,
    # The CLI's default run is private (user-level DP, distributed noise, SecAgg+);
    # this walk-through starts from the plaintext, non-private reference.
    "aggregation.protocol": "plaintext", "privacy.unit": "none", "training.sampling": "fixed",
}
config = load_config(None, TINY)
config.model_name, config.split_protocol
"""),
    md("## 1. Train\n`run_job` loads the data, splits it, runs the federated rounds and evaluates."),
    code("""
result = run_job(config)
print("final:", result["final"])
print("bytes sent per client per round:", round(result["bytes_sent_per_client_mean"]))
print(f"wall time: {result['wall_time_seconds']:.2f} s")
"""),
    code("""
import pandas as pd

pd.DataFrame(result["rounds"])[["round", "sampled", "train_loss", "rmse"]]
"""),
    md("""
## 2. Secure aggregation, by hand

The server only needs the *sum* of the client updates. Secure aggregation
(SecAgg, Bonawitz et al. 2017) gives it exactly that sum and nothing about
any single update. Floats are first encoded to integers mod 2^bits.
"""),
    code("""
import numpy as np

from protocols.encoding import FixedPointEncoder
from protocols.masking import SecAgg

rng = np.random.default_rng(0)
updates = {client: rng.normal(scale=0.1, size=50) for client in range(6)}
encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=len(updates), bits=32)
encoded = {client: encoder.encode(u) for client, u in updates.items()}
outcome = SecAgg().run_round(encoded, bits=32)
secure_sum = encoder.decode(outcome.total)
print("contributors:", outcome.contributors)
print("max |secure sum - float sum|:", np.abs(secure_sum - sum(updates.values())).max())
print("bytes sent per client:", int(np.mean(list(outcome.bytes_sent.values()))))
"""),
    md("A client that vanishes before uploading its masked input is left out of the sum; "
       "the masks it shared with the others are removed using their secret shares:"),
    code("""
print("stages:", SecAgg().stages)
dropped = SecAgg().run_round(encoded, bits=32, dropouts={3: "masked_input"})
survivors = [c for c in updates if c in dropped.contributors]
print("contributors:", dropped.contributors, "dropped:", dropped.dropped)
print("max error:", np.abs(encoder.decode(dropped.total) - sum(updates[c] for c in survivors)).max())
"""),
    md("The engine runs the same protocol when `aggregation.protocol` asks for it:"),
    code("""
secure = run_job(load_config(None, {**TINY, "aggregation.protocol": "secagg+"}))
pd.DataFrame({"plaintext": {**result["final"], "bytes/client/round": result["bytes_sent_per_client_mean"]},
              "secagg+": {**secure["final"], "bytes/client/round": secure["bytes_sent_per_client_mean"]}})
"""),
    md("## 3. Evaluate against the centralized twin\nSame model, same split, all ratings pooled on one machine."),
    code("""
from secure_fedrec.centralized import train_centralized

split = make_split(config, load_data(config))
central = train_centralized(config, split, epochs=10)
pd.DataFrame({"federated": result["final"], "centralized": central.metrics})
"""),
]


DP_TRADEOFF = [
    md("""
# DP / accuracy trade-off study

User-level DP-FedAvg (McMahan et al. 2018): each sampled client's whole update
is clipped to L2 norm C, the server adds Gaussian noise z·C to the sum, and
the accountant turns (z, sampling rate, rounds) into ε at δ = min(1/(10N), N^-1.1). More
noise → smaller ε → worse accuracy.

This notebook runs the same machinery as
`secure-fedrec study --config study.toml --out DIR` and
`secure-fedrec report DIR`: a grid of run configs, run cell by cell (resumable),
one tidy row per run and seed, plots and a reviewer report. See
docs/studies.md, and docs/privacy.md for what the ε covers.
"""),
    code('''
import tempfile
from pathlib import Path

from secure_fedrec.studies import parse_study, run_study

STUDY = """
[study]
name = "dp-tradeoff"
seeds = [0, 1]

[base]
training.rounds = 4
training.local_epochs = 1
training.clients_per_round = 15
training.sampling = "poisson"   # the user-level accountant assumes Poisson sampling
model.dim = 4
data.synthetic.n_users = 60
data.synthetic.n_items = 50
data.synthetic.mean_ratings_per_user = 15

[[grid]]                        # the no-DP reference (epsilon = infinity)
"privacy.unit" = ["none"]

[[grid]]                        # user-level DP (central Gaussian noise) at three noise levels
"privacy.unit" = ["user"]
"privacy.noise" = ["central"]
"privacy.noise_multiplier" = [0.5, 1.0, 2.0]
"""
out = Path(tempfile.mkdtemp(prefix="dp-tradeoff-"))
spec = parse_study(STUDY)
print(spec.n_runs, "runs into", out)
'''),
    code("""
outcome = run_study(spec, out)
print(f"{outcome.ran} ran now, {outcome.skipped} were already done")
"""),
    md("Running it again does nothing: every run is already recorded under its config hash."),
    code("""
again = run_study(spec, out, progress=False)
assert again.ran == 0 and again.skipped == spec.n_runs
"""),
    md("The tidy table (`results.csv`): one row per run and seed."),
    code("""
import pandas as pd

rows = pd.read_csv(out / "results.csv")
rows[["mechanism", "param.privacy.noise_multiplier", "seed", "epsilon", "delta", "metric.rmse"]]
"""),
    md("Mean ± std over seeds; ε = ∞ (no DP) is drawn at the right edge, past the axis break."),
    code("""
from IPython.display import Image

from secure_fedrec.reports import make_plots

plots = {p.name: p for p in make_plots(out)}
Image(filename=str(plots["privacy_utility"].png))
"""),
    md("The report a privacy reviewer reads: one self-contained HTML file, plus Markdown."),
    code("""
from secure_fedrec.reports import write_report

for path in write_report(out):
    print(path, path.stat().st_size, "bytes")
print((out / "report.md").read_text().split("## Plots")[0])
"""),
]


PRIVACY_AUDIT = [
    md("""
# Privacy audit: is the claimed ε real?

An accountant gives an *upper* bound ε. An audit runs an attack and turns its
success into a *lower* bound ε̂ (95 % confidence). ε̂ > ε means the
implementation leaks more than claimed — a bug, not bad luck.

Here we audit the Gaussian mechanism that user-level DP-FedAvg applies to the
sum of clipped updates, with the one-run method of Steinke, Nasr and Jagielski
(2023): m canary "users" (random unit vectors) are each included with
probability ½, the noisy sum is released once, and the auditor scores each
canary by its inner product with the release.
"""),
    code("""
import warnings

import numpy as np
import pandas as pd

from attacks.audit import PrivacyViolationWarning, audit_one_run, draw_canary_inclusion
from attacks.metrics import roc_auc
from secure_fedrec.privacy import PldAccountant

NUM_CANARIES = 1000
DIM = 4000
DELTA = 1e-5
rng = np.random.default_rng(0)
canaries = rng.normal(size=(NUM_CANARIES, DIM))
canaries /= np.linalg.norm(canaries, axis=1, keepdims=True)  # each has L2 norm 1 = the clip norm
"""),
    code("""
def audit(claimed_noise: float, actual_noise: float, seed: int = 0) -> dict:
    included = draw_canary_inclusion(NUM_CANARIES, random_state=seed)
    noise = np.random.default_rng(seed + 1).normal(scale=actual_noise, size=DIM)
    release = canaries[included.astype(bool)].sum(axis=0) + noise
    scores = canaries @ release
    accountant = PldAccountant()
    accountant.step(noise_multiplier=claimed_noise, sample_rate=1.0)
    epsilon = accountant.get_epsilon(DELTA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrivacyViolationWarning)
        result = audit_one_run(scores, included, num_positive=[25, 50, 100], num_negative=[0, 50, 100],
                               epsilon_claimed=epsilon, delta=DELTA)
    return {"mechanism": "honest" if claimed_noise == actual_noise else "buggy (noise 4x too small)",
            "noise_multiplier": claimed_noise, "epsilon": epsilon, "delta": DELTA,
            "attack.auc": roc_auc(included, scores),
            "attack.epsilon_lower_bound": result.epsilon_lower_bound,
            "violation": result.violation, "warned": bool(caught)}
"""),
    md("An honest mechanism at several noise levels, and a buggy one that adds a quarter of the noise it accounts for:"),
    code("""
honest = [audit(z, z, seed) for z in (0.8, 1.5, 3.0) for seed in (0, 1)]
buggy = [audit(z, z / 4, seed) for z in (3.0, 6.0) for seed in (0, 1)]
rows = pd.DataFrame(honest + buggy)
rows[["mechanism", "noise_multiplier", "epsilon", "attack.epsilon_lower_bound", "attack.auc", "violation"]]
"""),
    code("""
assert not rows.loc[rows.mechanism == "honest", "violation"].any(), "an honest mechanism failed its audit"
print("buggy runs flagged:", int(rows.loc[rows.mechanism != "honest", "violation"].sum()), "of",
      int((rows.mechanism != "honest").sum()))
"""),
    md("Left: attack AUC against ε. Right: ε̂ against ε — every point must stay below y = x."),
    code("""
from secure_fedrec.reports.plots import leakage_figure

rows["group_id"] = rows["mechanism"] + rows["noise_multiplier"].astype(str)
fig = leakage_figure(rows)
"""),
    md("""
A one-run audit with 1000 canaries certifies at most a few units of ε, so
ε̂ is far below ε for the honest runs: the audit can catch gross bugs like the
one above, not prove tightness. See docs/attacks.md.
"""),
]


PROTOCOL_COST = [
    md("""
# Protocol cost: plaintext vs masking vs Paillier

The same integer vectors are summed by each protocol behind the common
`protocols.api.SecureSum` interface; we record wall time and the bytes each
client uploads, for n clients and vectors of length m.

Defaults are small so the notebook runs in a minute; Paillier uses a fresh
2048-bit key (two-party mode: one decryptor that only sees the aggregate).
"""),
    code("""
import time

import numpy as np
import pandas as pd

from protocols.masking import SecAgg, SecAggPlus
from protocols.paillier import PaillierSecureSum
from protocols.plaintext import PlaintextSum

CLIENTS = [4, 8, 16]
LENGTHS = [100, 1000]
BITS = 32
PROTOCOLS = {
    "plaintext": PlaintextSum(),
    "secagg": SecAgg(),
    "secagg+": SecAggPlus(),
    "paillier": PaillierSecureSum(mode="two_party", min_clients=2),
}
"""),
    code("""
def measure(name: str, n: int, m: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    inputs = {c: rng.integers(0, 2**BITS, size=m, dtype=np.uint64) for c in range(n)}
    started = time.perf_counter()
    outcome = PROTOCOLS[name].run_round(inputs, bits=BITS)
    seconds = time.perf_counter() - started
    expected = np.zeros(m, dtype=np.uint64)
    for v in inputs.values():
        expected += v  # uint64 wraps mod 2^64, then reduce mod 2^BITS
    assert np.array_equal(outcome.total, expected % np.uint64(2**BITS)), name
    return {"protocol": name, "n": n, "m": m, "seconds": seconds,
            "bytes_per_client": float(np.mean(list(outcome.bytes_sent.values())))}

_ = PROTOCOLS["paillier"].run_round({0: np.zeros(4, np.uint64), 1: np.zeros(4, np.uint64)}, bits=BITS)  # key generation, once
"""),
    code("""
rows = pd.DataFrame([measure(p, n, m) for p in PROTOCOLS for n in CLIENTS for m in LENGTHS])
rows.pivot_table(index=["n", "m"], columns="protocol", values="seconds").round(4)
"""),
    code("""
rows.pivot_table(index=["n", "m"], columns="protocol", values="bytes_per_client").round(0)
"""),
    md("Time and bytes vs n (at the largest m) and vs m (at the largest n):"),
    code("""
from secure_fedrec.reports.plots import protocol_cost_figure

fig_n = protocol_cost_figure(rows[rows.m == max(LENGTHS)], n_column="n", m_column=None,
                             time_column="seconds", bytes_column="bytes_per_client")
"""),
    code("""
fig_m = protocol_cost_figure(rows[rows.n == max(CLIENTS)], n_column=None, m_column="m",
                             time_column="seconds", bytes_column="bytes_per_client")
"""),
    md("""
Masking costs O(n) key agreements and shares per client, so its per-client
bytes grow with n (SecAgg) or with log n (SecAgg+); Paillier uploads one
ciphertext per packed slot group, independent of n, but its encryption
dominates the time. See benchmarks/ for the large-size measurements.
"""),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_dp_tradeoff.ipynb": DP_TRADEOFF,
    "03_privacy_audit.ipynb": PRIVACY_AUDIT,
    "04_protocol_cost.ipynb": PROTOCOL_COST,
}


def build(folder: Path = HERE) -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(notebook)
        path = folder / name
        nbformat.write(notebook, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print(f"wrote {path}")
