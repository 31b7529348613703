"""The training curve of every run: train/validation loss and validation macro-F1 per epoch, as a picture
(logged to MLflow) and as a table (``dvc plots show`` draws it, ``dvc plots diff`` compares runs)."""

from __future__ import annotations

from pathlib import Path


def plot_curve(history: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (losses, f1) = plt.subplots(1, 2, figsize=(9, 3.5))
    losses.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    losses.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    losses.legend()
    f1.plot(epochs, [row["val_macro_f1"] for row in history], marker="o", color="tab:green")
    f1.set(xlabel="epoch", ylabel="macro-F1", title="validation macro-F1", ylim=(0, 1))
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def write_history(history: list[dict], out: Path) -> None:
    """One CSV row per epoch: epoch, train_loss, val_loss, val_macro_f1."""
    import csv

    columns = ("epoch", "train_loss", "val_loss", "val_macro_f1")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in history)
