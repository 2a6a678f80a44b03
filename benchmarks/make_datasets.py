"""Data sets the defaults were not tuned on, written as files a user would have.

    python benchmarks/make_datasets.py --out runs/datasets

* ``ml-60pct/ratings.csv``: a random 60 % of the users of ml-latest-small (all their
  ratings), in the ml-latest format (needs ../shared/data/ml-latest-small).
* ``lastfm-like/user_artists.dat``: Last.fm-2K's shape and format (1,892 users,
  17,632 artists, ~92,800 user-artist pairs, ``userID<TAB>artistID<TAB>weight``,
  no timestamps), from the synthetic generator's implicit mode (Zipf-like item
  popularity, lognormal user activity, latent preferences), with raw ids shuffled
  and play counts drawn heavy-tailed.
* ``implicit-100k/user_artists.dat``: the same generator at ~100,000 pairs (the
  evaluation-cost file of docs/results.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from secure_fedrec.data import synthetic_ratings

ROOT = Path(__file__).resolve().parents[1]


def movielens_subsample(source: Path, out: Path, fraction: float = 0.6, seed: int = 0) -> Path:
    frame = pd.read_csv(source / "ratings.csv")
    users = frame["userId"].unique()
    keep = np.random.default_rng(seed).choice(users, size=round(fraction * len(users)), replace=False)
    out.mkdir(parents=True, exist_ok=True)
    frame[frame["userId"].isin(keep)].to_csv(out / "ratings.csv", index=False)
    return out / "ratings.csv"


def lastfm_like(out: Path, n_users: int, n_items: int, per_user: float, seed: int = 0) -> Path:
    data = synthetic_ratings(n_users=n_users, n_items=n_items, mean_ratings_per_user=per_user,
                             seed=seed, implicit=True)
    rng = np.random.default_rng(seed + 1)
    user_ids = rng.permutation(n_users) + 2  # Last.fm's ids start at 2 and have gaps
    item_ids = rng.permutation(n_items * 2)[:n_items] + 1
    weights = np.maximum(1, np.round(rng.lognormal(5.0, 1.5, size=len(data)))).astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"userID": user_ids[data.users], "artistID": item_ids[data.items], "weight": weights})
    frame.sort_values(["userID", "artistID"]).to_csv(out / "user_artists.dat", sep="\t", index=False)
    return out / "user_artists.dat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/datasets")
    parser.add_argument("--movielens", type=Path, default=ROOT.parent / "shared/data/ml-latest-small")
    args = parser.parse_args()
    if args.movielens.exists():
        print(movielens_subsample(args.movielens, args.out / "ml-60pct"))
    print(lastfm_like(args.out / "lastfm-like", 1892, 17632, 49.0))
    print(lastfm_like(args.out / "implicit-100k", 2000, 17000, 50.0, seed=1))


if __name__ == "__main__":
    main()
