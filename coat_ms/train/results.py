"""Per-epoch results: a CSV (rewritten atomically each epoch) and a PNG of loss and accuracy curves."""
import csv
import io

from ..errors import CoatError
from ..fileio import atomic_write_bytes

COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "top1", "top5", "epoch_time_s", "img_per_s",
           "skipped_images"]


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_rows(path, up_to_epoch):
    """Typed rows of an earlier results.csv up to ``up_to_epoch`` (a resumed run continues it)."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    typed = {k: ("" if v in ("", None) else int(v) if k in ("epoch", "step", "skipped_images")
                                 else float(v)) for k, v in row.items() if k in COLUMNS}
                except (TypeError, ValueError):
                    raise CoatError(f"cannot resume: {path} is damaged at line {line}; repair it or move it away "
                                    f"(the checkpoint itself is fine)") from None
                if "epoch" not in typed or typed["epoch"] == "":
                    raise CoatError(f"cannot resume: {path} has no epoch column; repair it or move it away")
                if typed["epoch"] <= up_to_epoch:
                    rows.append(typed)
    except UnicodeDecodeError:
        raise CoatError(f"cannot resume: {path} is not a text file; repair it or move it away") from None
    return rows


def plot_curves(path, rows, title=""):
    """Loss (train, val) and Top-1/Top-5 accuracy against epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss")
    if any(r.get("val_loss") not in (None, "") for r in rows):
        ax_loss.plot(epochs, [r.get("val_loss") for r in rows], "s-", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if any(r.get("top1") not in (None, "") for r in rows):
        ax_acc.plot(epochs, [100 * r["top1"] for r in rows], "o-", label="val Top-1")
        ax_acc.plot(epochs, [100 * r["top5"] for r in rows], "s-", label="val Top-5")
        ax_acc.legend()
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
