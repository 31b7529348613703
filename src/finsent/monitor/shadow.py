"""Shadow scoring: the challenger (a candidate awaiting approval) scores the same batch as the champion, and the
two are compared before anyone approves it: how often they agree, how each label's share would change (overall
and per period), and the sentences where they disagree most. Nothing the challenger says is served."""

from __future__ import annotations

import pandas as pd

from finsent.config import MonitorParams
from finsent.errors import FinsentError
from finsent.monitor.aggregate import period_of

DISAGREEMENTS_SHOWN = 10


def _shares(labels: pd.Series, names: list[str]) -> dict[str, float]:
    return {name: float((labels == name).mean()) if len(labels) else 0.0 for name in names}


def _share_changes(champion: pd.Series, challenger: pd.Series, names: list[str]) -> dict[str, dict]:
    before, after = _shares(champion, names), _shares(challenger, names)
    return {name: {"champion": round(before[name], 4), "challenger": round(after[name], 4),
                   "difference": round(after[name] - before[name], 4)} for name in names}


def compare_shadow(champion: pd.DataFrame, challenger: pd.DataFrame, labels: list[str],
                   params: MonitorParams) -> tuple[dict, pd.DataFrame]:
    """Both models' scored rows of one batch (same rows, same order) -> (the comparison, the rows where they
    disagree, most confident disagreement first)."""
    champion, challenger = champion.reset_index(drop=True), challenger.reset_index(drop=True)
    if not champion["id"].equals(challenger["id"]):
        raise FinsentError("shadow scoring: the challenger scored other rows than the champion; run the monitor again")
    agree = champion["label"].to_numpy() == challenger["label"].to_numpy()
    rows = len(champion)
    agreement = float(agree.mean()) if rows else 1.0
    periods = period_of(champion, params)
    per_period = []
    for period, index in champion.groupby(periods, dropna=False).groups.items():
        per_period.append({"period": None if pd.isna(period) else str(period), "rows": int(len(index)),
                           "agreement": round(float(agree[champion.index.get_indexer(index)].mean()), 4),
                           "shares": _share_changes(champion.loc[index, "label"], challenger.loc[index, "label"],
                                                    labels)})
    disagreements = pd.DataFrame({
        "source": champion["source"], "source_record": champion["source_record"],
        "text": champion[params.text_column], "champion_label": champion["label"],
        "champion_confidence": champion["confidence"].round(4), "challenger_label": challenger["label"],
        "challenger_confidence": challenger["confidence"].round(4)})[~agree]
    disagreements = disagreements.assign(
        strength=disagreements[["champion_confidence", "challenger_confidence"]].mean(axis=1)
    ).sort_values("strength", ascending=False, kind="stable").drop(columns="strength")
    report = {"champion_version": str(champion["model_version"].iloc[0]) if rows else None,
              "challenger_version": str(challenger["model_version"].iloc[0]) if rows else None,
              "rows": rows, "agreement": round(agreement, 4), "min_agreement": params.shadow_min_agreement,
              "below_min_agreement": agreement < params.shadow_min_agreement,
              "shares": _share_changes(champion["label"], challenger["label"], labels), "periods": per_period,
              "disagreements": int((~agree).sum()),
              "top_disagreements": disagreements.head(DISAGREEMENTS_SHOWN).to_dict(orient="records")}
    return report, disagreements
