"""The training curve and reliability-diagram PNGs written to docs/reports/ (matplotlib, imported lazily)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def plot_training(log_path: Path, out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.array([r["opt_step"] for r in train])
    for key, label in (
        ("loss", "total loss"),
        ("fn_loss", "function CE"),
        ("ptr_loss", "pointer CE"),
        ("halt_loss", "halting BCE"),
    ):
        v = np.array([r[key] for r in train])
        k = max(1, len(v) // 100)
        ax1.plot(steps[k - 1 :], np.convolve(v, np.ones(k) / k, mode="valid"), label=label)
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step")
    ax1.set_title("training loss (moving average)")
    ax1.legend()
    v = np.array([r["exact"] for r in train])
    k = max(1, len(v) // 100)
    ax2.plot(steps[k - 1 :], np.convolve(v, np.ones(k) / k, mode="valid"), label="train exact (per supervision step)")
    if val:
        ax2.plot(
            [r["opt_step"] for r in val], [r["val_exact"] for r in val], "o-", label="validation exact (unseen names)"
        )
    ax2.set_ylim(0.5, 1.0)
    ax2.set_xlabel("optimizer step")
    ax2.set_title("exact match")
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_reliability(curves: dict[str, tuple[list[float], list[bool]]], out_png: Path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.evaluate import expected_calibration_error

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.4), squeeze=False)
    for ax, (name, (conf, correct)) in zip(axes[0], curves.items()):
        c, y = np.array(conf), np.array(correct, dtype=float)
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(c, edges) - 1, 0, bins - 1)
        centers, accs, counts = [], [], []
        for b in range(bins):
            m = which == b
            if m.any():
                centers.append(c[m].mean())
                accs.append(y[m].mean())
                counts.append(int(m.sum()))
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(centers, accs, "o-", label="model")
        for x, a, n in zip(centers, accs, counts):
            ax.annotate(str(n), (x, a), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (calibrated)")
        ax.set_ylabel("exact-match rate")
        ax.set_title(f"{name}\nECE {expected_calibration_error(conf, correct):.4f}, n={len(conf)}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
