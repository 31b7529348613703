"""MLflow's size limits on the texts finsent writes there: registered-model and model-version descriptions are
VARCHAR(5000) columns in SQL stores (PostgreSQL refuses more; SQLite does not check), run tag values such as a
run's description (``mlflow.note.content``) are capped at 8000 characters. A longer text is cut at a line end
and says where the whole of it is, so a long card or report never fails the step that writes it."""

from __future__ import annotations

DESCRIPTION_LIMIT = 5000  # registered model / model version description
TAG_LIMIT = 8000  # run tag value


def fitted(text: str, limit: int, whole: str) -> str:
    """``text`` if it fits in ``limit`` characters, else its first lines and a last line naming ``whole``."""
    if len(text) <= limit:
        return text
    tail = f"\n\n… (cut to MLflow's {limit}-character limit; the whole text: {whole})\n"
    head = text[:limit - len(tail)]
    return (head[:head.rfind("\n")] if "\n" in head else head) + tail
