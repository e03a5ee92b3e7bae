"""The AE baseline's CPU time per epoch and for scoring, before and after issue 24, side by side.

Synthetic frame vectors (``--vectors`` × 640 float32, ``--clip-vectors`` per clip, 10 % of the
clips target, 1 in 6 clips test) go through ``train_autoencoder`` (``--epochs``) and the scoring
of ``run_autoencoder`` (residuals, source/target covariances, out-of-fold Mahalanobis), once
with the package as it was at ``--before`` (extracted with ``git archive``) and once with this
tree, each in its own process with torch on ``--threads`` threads. Prints seconds per epoch
(the mean of ``history["seconds"]``: the steps and the validation pass), seconds of scoring, and
the largest relative difference of the losses and scores between the two.

    python benchmarks/bench_autoencoder.py --vectors 100000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import load_recorded

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "fdd6931"  # the last commit before issue 24's changes to the baseline


def measure(args: argparse.Namespace) -> dict:
    """In a worker process: train and score with whichever ``asd_utils`` is importable."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from asd_utils.models import autoencoder as ae
    from asd_utils.systems import baseline

    generator = torch.Generator().manual_seed(0)
    n_clips = -(-args.vectors // args.clip_vectors)
    owner = torch.arange(args.vectors) // args.clip_vectors
    clip_level = torch.randn(n_clips, 640, generator=generator)[owner] * 3  # per-clip offsets
    vectors = torch.randn(args.vectors, 640, generator=generator) * 4 - 30 + clip_level
    is_train = np.arange(n_clips) % 6 != 5
    domain = np.where(np.arange(n_clips) % 10 == 3, "target", "source")
    train = torch.tensor(is_train)[owner]

    start = time.perf_counter()
    model, history = ae.train_autoencoder(
        vectors[train], ae.AETrainConfig(epochs=args.epochs), progress=False
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    if hasattr(baseline, "score_clips"):
        scores = baseline.score_clips(model, vectors, owner, is_train, domain)
    else:  # the scoring lines of run_autoencoder at BEFORE
        train_res = ae.residuals(model, vectors[train])
        train_domain = domain[owner[train].numpy()]
        inv_covs = [
            ae.fit_inverse_covariance(train_res[torch.from_numpy(train_domain == d)])
            for d in ("source", "target")
        ]
        scores = ae.clip_scores(model, vectors, owner, n_clips, *inv_covs)
        train_clips = np.flatnonzero(is_train)
        scores["mahalanobis"][train_clips] = baseline.out_of_fold_mahalanobis(
            train_res, owner[train].numpy(), train_clips, domain
        )
    score_s = time.perf_counter() - start
    return {
        "epoch_s": float(np.mean([h["seconds"] for h in history])),
        "train_s": train_s,
        "score_s": score_s,
        "losses": [[h["train_loss"], h["val_loss"]] for h in history],
        "mse": scores["mse"].tolist(),
        "mahalanobis": scores["mahalanobis"].tolist(),
    }


def run_version(tree: Path, args: argparse.Namespace) -> dict:
    """``measure`` in a fresh process that imports ``asd_utils`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).parent}"}
    command = [sys.executable, __file__, "--worker", *sys.argv[1:]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def relative_difference(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--clip-vectors", type=int, default=309, help="a 10 s clip's vectors")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' code")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return

    with tempfile.TemporaryDirectory() as before_tree, load_recorded():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "asd_utils"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", before_tree], input=archive.stdout, check=True)
        print(
            f"{args.vectors} vectors x 640, {args.epochs} epoch(s), batch 256, "
            f"torch threads {args.threads}; before = {args.before}, after = this tree"
        )
        results = {
            "before": run_version(Path(before_tree), args),
            "after": run_version(ROOT, args),
        }
    print(f"{'':8} {'s/epoch':>9} {'train s':>9} {'scoring s':>10} {'epoch+scoring s':>16}")
    for name, r in results.items():
        total = r["epoch_s"] + r["score_s"]
        print(
            f"{name:8} {r['epoch_s']:9.2f} {r['train_s']:9.2f} {r['score_s']:10.2f} {total:16.2f}"
        )
    b, a = results["before"], results["after"]
    print(
        f"speed-up: epoch {b['epoch_s'] / a['epoch_s']:.2f}x, scoring "
        f"{b['score_s'] / a['score_s']:.2f}x, epoch + scoring "
        f"{(b['epoch_s'] + b['score_s']) / (a['epoch_s'] + a['score_s']):.2f}x"
    )
    for key in ("losses", "mse", "mahalanobis"):
        print(f"largest relative difference, {key}: {relative_difference(a[key], b[key]):.2e}")


if __name__ == "__main__":
    run()
