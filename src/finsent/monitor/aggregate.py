"""Per-period (and per-entity) sentiment aggregates, and negative-share spike alerts.

A period is judged against its own trailing window (the ``spike_window`` periods before it, of the
same entity): it is a spike when its negative share is at least
``trailing mean + max(spike_z * spread, spike_min_increase)``. The spread is the standard error of a
two-proportion test of the period against its trailing window's rows (pooled share), or the trailing
day-to-day standard deviation when that is larger: a few days of unusually steady news do not make
ordinary sampling noise an alert, and jumpy news needs a bigger jump. Periods with too few rows, or
too little history, are reported and not judged, so a quiet night cannot raise an alert.
"""

from __future__ import annotations

import pandas as pd

from finsent.config import MonitorParams
from finsent.errors import FinsentError

ALL = "(all)"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula (OWASP)


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text cell that a spreadsheet would run as a formula prefixed by ``'`` (OWASP's
    CSV-injection rule): entity values come from the scored data, and an analyst opens aggregates.csv in Excel."""
    safe = frame.copy()
    for column in safe.columns:
        if pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START)
                                            else v)
    return safe


def period_of(scored: pd.DataFrame, params: MonitorParams) -> pd.Series:
    """The start of each row's period (``monitor.period`` of ``monitor.time_column``); NaT for all without one."""
    if not params.time_column:
        return pd.Series(pd.NaT, index=scored.index)
    if params.time_column not in scored.columns:
        raise FinsentError(f"monitor.time_column '{params.time_column}' is not a column of the batch "
                           f"(found {', '.join(map(str, scored.columns))}); set it, or null for one period")
    times = pd.to_datetime(scored[params.time_column], errors="coerce", utc=True)
    if times.isna().any():
        bad = scored.loc[times.isna(), params.time_column].head(3).tolist()
        raise FinsentError(f"{int(times.isna().sum())} rows have no readable {params.time_column} "
                           f"(e.g. {bad}); use ISO dates")
    return times.dt.tz_localize(None).dt.to_period(params.period).dt.start_time


def aggregate(scored: pd.DataFrame, labels: list[str], params: MonitorParams) -> pd.DataFrame:
    """One row per (entity, period): rows, share of each label, mean score (p_positive - p_negative).
    Entity '(all)' is the whole batch; with ``entity_column`` set, each entity gets its own rows too."""
    frame = scored.assign(period=period_of(scored, params))
    frame["score"] = frame.get("prob_positive", 0.0) - frame.get("prob_negative", 0.0)
    groups = [frame.assign(entity=ALL)]
    if params.entity_column:
        if params.entity_column not in frame.columns:
            raise FinsentError(f"monitor.entity_column '{params.entity_column}' is not a column of the batch")
        groups.append(frame.assign(entity=frame[params.entity_column].astype(str)))
    both = pd.concat(groups, ignore_index=True)
    summary = both.groupby(["entity", "period"], dropna=False).agg(
        rows=("label", "size"),
        **{f"share_{name}": ("label", lambda s, n=name: float((s == n).mean())) for name in labels},
        mean_score=("score", "mean"))
    return summary.reset_index().sort_values(["entity", "period"], kind="stable").reset_index(drop=True)


def spikes(aggregates: pd.DataFrame, params: MonitorParams) -> tuple[pd.DataFrame, list[dict]]:
    """Judge every period against its trailing window -> (aggregates with the verdict columns, alerts)."""
    judged, alerts = [], []
    for entity, group in aggregates.groupby("entity", sort=False):
        group = group.sort_values("period").reset_index(drop=True)
        negatives = group["share_negative"] * group["rows"]

        def trailing(series: pd.Series):
            return series.shift(1).rolling(params.spike_window, min_periods=1)

        history, trailing_rows = trailing(group["rows"]).count(), trailing(group["rows"]).sum()
        group["trailing_mean"] = trailing(negatives).sum() / trailing_rows
        group["trailing_std"] = trailing(group["share_negative"]).std(ddof=0)
        # two-proportion test of this period against its trailing window (pooled share under "no change"),
        # widened to the day-to-day spread when the news itself is that jumpy
        pooled = (negatives + trailing(negatives).sum()) / (group["rows"] + trailing_rows)
        sampling = (pooled * (1 - pooled) * (1 / group["rows"] + 1 / trailing_rows)) ** 0.5
        group["spread"] = pd.concat([sampling, group["trailing_std"]], axis=1).max(axis=1)
        group["threshold"] = group["trailing_mean"] + (params.spike_z * group["spread"]).clip(
            lower=params.spike_min_increase)
        judgeable = (history >= params.spike_min_periods) & (group["rows"] >= params.min_rows_per_period)
        group["judged"] = judgeable
        group["spike"] = judgeable & (group["share_negative"] >= group["threshold"])
        for row in group[group["spike"]].itertuples():
            alerts.append({"type": "negative_share_spike", "entity": entity, "period": str(row.period),
                           "rows": int(row.rows), "share_negative": round(row.share_negative, 4),
                           "trailing_mean": round(row.trailing_mean, 4), "threshold": round(row.threshold, 4),
                           "z": round((row.share_negative - row.trailing_mean) / row.spread, 2)
                           if row.spread > 0 else None})
        judged.append(group)
    return pd.concat(judged, ignore_index=True), alerts
