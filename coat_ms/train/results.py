"""Per-epoch results: a CSV (rewritten atomically each epoch) and a PNG of loss and accuracy curves."""
import csv
import io
import os

COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "top1", "top5", "epoch_time_s", "img_per_s"]


def _atomic_write_bytes(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    _atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path):
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


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
    _atomic_write_bytes(path, buf.getvalue())
