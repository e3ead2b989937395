"""Plots of a run's metrics (``rlsf plot RUN_DIR``): one PNG with a panel per metric."""

from __future__ import annotations

from pathlib import Path

from rlsf.runtime.metric_log import read_metrics
from rlsf.settings import ConfigError

DEFAULT_KEYS = ("reward/total", "reward/success", "feedback/step_accuracy", "kl", "loss/policy", "loss/value",
                "entropy", "batch_entropy", "batch/answer_mode_share", "response/length", "loss/sft")


def plot_metrics(run_dir: str | Path, keys: list[str] | None = None, output: str | Path | None = None) -> Path:
    """Plot ``metrics.jsonl`` of ``run_dir`` (and a stacked per-stage time panel) to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise FileNotFoundError("plotting needs matplotlib: pip install 'rlsf[plots]'") from e
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    records = read_metrics(path)
    present = [k for k in (keys or DEFAULT_KEYS) if any(k in r for r in records)]
    timing = sorted({k for r in records for k in r if k.startswith("timing/") and k != "timing/step"})
    panels = present + (["timing"] if timing else [])
    if not present:
        raise ConfigError(f"--keys: none of {list(keys or DEFAULT_KEYS)} is in {path}")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        if key == "timing":
            steps = [r["step"] for r in records]
            bottom = [0.0] * len(records)
            for k in timing:
                vals = [float(r.get(k, 0.0)) for r in records]
                ax.bar(steps, vals, bottom=bottom, label=k.split("/", 1)[1])
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title("seconds per step by stage")
            ax.legend(fontsize=7)
        else:
            pts = [(r["step"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
            ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(output) if output else run_dir / "metrics.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
