"""Figures that more than one chapter draws. Each function returns a matplotlib Figure.

One book-wide style (:data:`STYLE`, set by :func:`book_style` when this module is imported):
every figure is at most :data:`COLUMN_INCHES` wide at :data:`DPI`, the width of the book's text
column, so the browser shows it at its own size and a 10 pt font stays 10 pt on the page (as
d2l's ``set_figsize``). A figure asked wider is scaled down to the column (:func:`subplots`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from asd_utils.evaluation.metrics import machine_sort_key

COLUMN_INCHES = 6.8  # the book's text column at 1280 px (688 px, measured) at DPI
DPI = 100
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (COLUMN_INCHES, 3.2),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 11,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def book_style() -> None:
    """Set :data:`STYLE` for every figure drawn after it (also in a notebook's inline backend,
    whose resolution it fixes at :data:`DPI`)."""
    plt.rcParams.update(STYLE)
    try:  # the inline backend keeps its own rc, applied when a figure is shown
        from matplotlib_inline.backend_inline import InlineBackend

        InlineBackend.instance().rc.update({"figure.dpi": DPI})
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - outside IPython
        pass


def subplots(*args, figsize: tuple[float, float] | None = None, **kwargs):
    """``plt.subplots`` with ``figsize`` scaled down to the column width (aspect kept, height
    no lower than 60 % of what was asked, so small multiples keep their panels)."""
    if figsize is not None and figsize[0] > COLUMN_INCHES:
        scale = COLUMN_INCHES / figsize[0]
        figsize = (COLUMN_INCHES, figsize[1] * max(scale, 0.6))
    return plt.subplots(*args, figsize=figsize, **kwargs)


book_style()


def _db_spectrogram(x: np.ndarray, sample_rate: int, n_fft: int = 1024) -> tuple:
    from scipy.signal import spectrogram

    f, t, s = spectrogram(x, fs=sample_rate, nperseg=n_fft, noverlap=n_fft * 3 // 4)
    return f, t, 10 * np.log10(s + 1e-12)


def near_far(audio: np.ndarray, sample_rate: int, title: str) -> plt.Figure:
    """Waveforms (top) and spectrograms (bottom) of a two-channel clip (2, samples), or mono."""
    names = ["ch0 (near mic)", "ch1 (far mic)"][: len(audio)]
    fig, axes = subplots(
        2,
        len(audio),
        figsize=(5 * len(audio), 4.5),
        squeeze=False,
        sharex=True,
        constrained_layout=True,
    )
    t = np.arange(audio.shape[1]) / sample_rate
    peak = np.abs(audio).max() or 1.0
    spectra = [_db_spectrogram(ch, sample_rate) for ch in audio]
    vmax = max(s.max() for _, _, s in spectra)
    for col, (name, ch, (f, st, s)) in enumerate(zip(names, audio, spectra, strict=True)):
        axes[0, col].plot(t, ch, lw=0.3)
        axes[0, col].set(title=name, ylim=(-peak, peak), ylabel="amplitude" if col == 0 else None)
        mesh = axes[1, col].pcolormesh(st, f / 1000, s, shading="auto", vmin=vmax - 80, vmax=vmax)
        axes[1, col].set(xlabel="time (s)", ylabel="frequency (kHz)" if col == 0 else None)
    fig.colorbar(mesh, ax=axes[1, :].tolist(), label="power (dB)")
    fig.suptitle(title)
    return fig


def training_curves(
    history: pd.DataFrame,
    group: str = "machine_type",
    columns: tuple[str, ...] = ("train_loss", "val_loss"),
) -> plt.Figure:
    """Loss per epoch (or step) for every ``group`` (one panel per loss column)."""
    fig, axes = subplots(
        1, len(columns), figsize=(5 * len(columns), 3.2), squeeze=False, constrained_layout=True
    )
    x = "epoch" if "epoch" in history else "step"
    for ax, column in zip(axes[0], columns, strict=True):
        for name, part in history.groupby(group, sort=False):
            ax.plot(part[x], part[column], label=name)
        ax.set(xlabel=x, ylabel=column.replace("_", " "), yscale="log")
    axes[0, -1].legend(ncol=2)
    return fig


def roc_by_machine(scores: pd.DataFrame, systems: list[str] | None = None) -> plt.Figure:
    """ROC curves per machine type (one panel each), one line per system, all test clips.

    ``scores``: columns ``system, machine_type, label, anomaly_score`` (test clips).
    """
    machine_types = sorted(scores["machine_type"].unique(), key=machine_sort_key)
    systems = systems or list(dict.fromkeys(scores["system"]))
    cols = min(3, len(machine_types))
    rows = int(np.ceil(len(machine_types) / cols))
    fig, axes = subplots(
        rows,
        cols,
        figsize=(2.4 * cols, 2.3 * rows + 0.5),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    for ax, machine_type in zip(axes.flat, machine_types, strict=False):
        part = scores[scores["machine_type"] == machine_type]
        for system in systems:
            s = part[part["system"] == system]
            if len(s):
                fpr, tpr, _ = roc_curve(s["label"] == "anomaly", s["anomaly_score"])
                ax.plot(fpr, tpr, label=system)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.axvspan(0, 0.1, color="grey", alpha=0.1)
        ax.set(title=machine_type, xlabel="false positive rate", ylabel="true positive rate")
    for ax in axes.flat[len(machine_types) :]:
        ax.axis("off")
    _legend_below(fig, axes.flat[0])
    return fig


def _legend_below(fig: plt.Figure, ax: plt.Axes, ncol: int = 4) -> None:
    """One legend for all panels, under them (it covers no data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)))


def score_distributions(scores: pd.DataFrame, system: str) -> plt.Figure:
    """Per machine type: test scores of one system by domain and label (strip of histograms)."""
    part = scores[scores["system"] == system]
    machine_types = sorted(part["machine_type"].unique(), key=machine_sort_key)
    cols = min(3, len(machine_types))
    rows = int(np.ceil(len(machine_types) / cols))
    fig, axes = subplots(
        rows, cols, figsize=(2.4 * cols, 2.0 * rows + 0.8), squeeze=False, constrained_layout=True
    )
    styles = {
        ("source", "normal"): ("tab:blue", "-"),
        ("source", "anomaly"): ("tab:red", "-"),
        ("target", "normal"): ("tab:blue", "--"),
        ("target", "anomaly"): ("tab:red", "--"),
    }
    for ax, machine_type in zip(axes.flat, machine_types, strict=False):
        m = part[part["machine_type"] == machine_type]
        bins = np.histogram_bin_edges(m["anomaly_score"], bins=20)
        for (domain, label), (color, ls) in styles.items():
            s = m[(m["domain"] == domain) & (m["label"] == label)]["anomaly_score"]
            ax.hist(s, bins=bins, histtype="step", color=color, ls=ls, label=f"{domain} {label}")
        ax.set(title=machine_type, xlabel="anomaly score", ylabel="test clips")
    for ax in axes.flat[len(machine_types) :]:
        ax.axis("off")
    _legend_below(fig, axes.flat[0])
    fig.suptitle(f"{system}: test-clip scores by domain and label")
    return fig


def table2_bars(wide: pd.DataFrame) -> plt.Figure:
    """Grouped bars of a Table-2 layout frame: per machine type and metric, one bar per system."""
    body = wide.drop(index=[i for i in wide.index if i[1] in ("hmean", "amean")])
    fig, ax = subplots(figsize=(max(8, 0.45 * len(body)), 3.6), constrained_layout=True)
    x = np.arange(len(body))
    width = 0.8 / len(body.columns)
    for i, system in enumerate(body.columns):
        ax.bar(x + i * width - 0.4 + width / 2, body[system], width, label=system)
    ax.set_xticks(
        x,
        [f"{m}\n{k}" for m, k in body.index],
    )
    ax.axhline(50, c="grey", lw=0.8, ls=":")
    ax.set(ylabel="AUC or pAUC (%)", ylim=(0, 100))
    ax.legend(ncol=len(body.columns))
    return fig


def table2_heatmap(wide: pd.DataFrame, reference: float = 50.0) -> plt.Figure:
    """Table 2 as an annotated heat map: one row per (machine type, metric) and the official
    score, one column per system, each cell its value in %; colour is the distance from
    ``reference`` (chance), so the differences between systems show where bars looked flat."""
    body = wide.drop(index=[i for i in wide.index if i[1] == "amean"]).astype(float)
    rows = [f"{m} {k}" if k != "hmean" else "official score" for m, k in body.index]
    span = max(10.0, float(np.nanmax(np.abs(body.to_numpy() - reference))))
    fig, ax = subplots(
        figsize=(min(COLUMN_INCHES, 2.6 + 0.95 * body.shape[1]), 0.8 + 0.27 * len(body)),
        constrained_layout=True,
    )
    ax.imshow(
        body.to_numpy(), cmap="RdBu_r", vmin=reference - span, vmax=reference + span, aspect="auto"
    )
    for (i, j), value in np.ndenumerate(body.to_numpy()):
        if np.isfinite(value):
            bold = "bold" if rows[i] == "official score" else "normal"
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontweight=bold)
    ax.set_xticks(np.arange(body.shape[1]), body.columns, rotation=30, ha="right")
    ax.set_yticks(np.arange(len(rows)), rows)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set(xlabel="system (red above 50 %, chance; blue below)", ylabel="machine type, metric")
    return fig


def spectrogram_panels(
    signals: dict[str, np.ndarray], sample_rate: int, title: str, columns: int | None = None
) -> plt.Figure:
    """Spectrograms of several one-channel signals ``{name: (samples,)}`` on one colour scale
    (the loudest panel's peak down to 80 dB below it), so panels compare by colour."""
    n = len(signals)
    cols = columns or (2 if n == 4 else min(n, 3))
    rows = int(np.ceil(n / cols))
    fig, axes = subplots(
        rows,
        cols,
        figsize=(4.2 * cols, 2.8 * rows),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    spectra = {name: _db_spectrogram(np.asarray(x), sample_rate) for name, x in signals.items()}
    vmax = max(s.max() for _, _, s in spectra.values())
    for ax, (name, (f, t, s)) in zip(axes.flat, spectra.items(), strict=False):
        mesh = ax.pcolormesh(t, f / 1000, s, shading="auto", vmin=vmax - 80, vmax=vmax)
        ax.set_title(name, fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency (kHz)")
    for ax in axes[-1, :]:
        ax.set_xlabel("time (s)")
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.colorbar(mesh, ax=axes.ravel().tolist(), label="power (dB)")
    fig.suptitle(title)
    return fig


_ANC_LABELS = {
    "noise_reduction_db": "noise reduction (dB)",
    "si_sdr_gain_db": "SI-SDR gain (dB)",
    "snr_gain_db": "SNR gain (dB)",
    "machine_removed_db": "machine sound removed (dB re machine)",
    "machine_change_db": "machine level change (dB)",
}


def anc_sweep(
    table: pd.DataFrame,
    x: str = "step_size",
    line: str = "filter_length",
    metrics: tuple[str, ...] = ("noise_reduction_db", "si_sdr_gain_db"),
    chosen: dict | None = None,
) -> plt.Figure:
    """A settings sweep of the canceller: per metric one panel, the mean over all rows (clips)
    of each (``line``, ``x``) pair, ``x`` on a log axis, one line per ``line`` value.

    ``table``: one row per clip and setting, with columns ``x``, ``line`` and ``metrics`` (as
    ``asd_utils.studies.denoising.evaluate_denoising`` plus the setting columns). ``chosen``: ``{x:
    value,
    line: value}`` of a setting to mark with a star.
    """
    means = table.groupby([line, x])[list(metrics)].mean().reset_index()
    fig, axes = subplots(
        1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False, constrained_layout=True
    )
    colours = plt.cm.viridis(np.linspace(0, 0.9, means[line].nunique()))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for colour, (value, part) in zip(colours, means.groupby(line), strict=True):
            ax.plot(part[x], part[metric], "o-", ms=3, color=colour, label=f"{value:g}")
        if chosen is not None:
            mark = means[(means[x] == chosen[x]) & (means[line] == chosen[line])]
            ax.plot(mark[x], mark[metric], "*", ms=14, mfc="none", mec="tab:red", label="chosen")
        ax.axhline(0, c="grey", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel=x.replace("_", " "), ylabel=_ANC_LABELS.get(metric, metric))
        ticks = np.unique(means[x])
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], minor=False)
        ax.minorticks_off()
    axes[0, -1].legend(title=line.replace("_", " "))
    return fig


def anc_convergence(
    curve: pd.DataFrame,
    group: str = "machine_type",
    metrics: tuple[str, ...] = ("noise_reduction_db", "machine_removed_db"),
) -> plt.Figure:
    """The canceller's effect over time within a clip: per metric one panel, the mean over the
    clips of each ``group`` per window (``curve``: ``asd_utils.studies.denoising.convergence_curve``
    rows with
    a ``group`` column added), against the window centre ``time_s``; a black line is the mean
    over all clips (over the windows that every clip has)."""
    fig, axes = subplots(
        1, len(metrics), figsize=(4.6 * len(metrics), 3.2), squeeze=False, constrained_layout=True
    )
    groups = sorted(curve[group].unique(), key=machine_sort_key)
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = curve.groupby([group, "time_s"])[metric].mean()
        for name in groups:
            ax.plot(means[name].index, means[name].to_numpy(), lw=1, label=name)
        common = curve.groupby("time_s").filter(lambda w: len(w) == curve["clip"].nunique())
        overall = common.groupby("time_s")[metric].mean()
        ax.plot(overall.index, overall.to_numpy(), c="k", lw=2.2, label="all clips")
        ax.set(xlabel="time in clip (s)", ylabel=_ANC_LABELS.get(metric, metric))
    axes[0, -1].legend(ncol=2)
    return fig


def embedding_map(
    points: np.ndarray,
    colour: pd.Series,
    marker: pd.Series | None = None,
    title: str = "",
    axes_names: tuple[str, str] = ("first principal component", "second principal component"),
) -> plt.Figure:
    """A 2-D map of embeddings (``points`` (N, 2), e.g. PCA or t-SNE, whose axes
    ``axes_names`` name), coloured by one label (e.g. attribute class) and marked by another
    (e.g. domain: ● source, ▲ target)."""
    fig, ax = subplots(figsize=(6.5, 5), constrained_layout=True)
    colours = {c: plt.cm.tab20(i % 20) for i, c in enumerate(sorted(pd.unique(colour)))}
    markers = dict(
        zip(sorted(pd.unique(marker)) if marker is not None else [None], "o^sDvP", strict=False)
    )
    for (c, m), index in (
        pd.DataFrame({"c": colour.to_numpy(), "m": None if marker is None else marker.to_numpy()})
        .groupby(["c", "m"], dropna=False)
        .groups.items()
    ):
        ax.scatter(
            points[index, 0],
            points[index, 1],
            s=10,
            color=colours[c],
            marker=markers[m],
            alpha=0.7,
            linewidths=0,
        )
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[c], label=c) for c in colours]
    if marker is not None:
        handles += [
            plt.Line2D([], [], ls="", marker=markers[m], color="k", label=m) for m in markers
        ]
    ax.legend(handles=handles, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set(title=title, xticks=[], yticks=[], xlabel=axes_names[0], ylabel=axes_names[1])
    return fig


def score_scales(tables: dict[str, pd.DataFrame], title: str) -> plt.Figure:
    """Box plots of each system's test-clip ``anomaly_score`` per machine type (scale check)."""
    machine_types = sorted(
        {m for t in tables.values() for m in t["machine_type"]}, key=machine_sort_key
    )
    fig, ax = subplots(figsize=(max(6, 1.2 * len(machine_types)), 3.2), constrained_layout=True)
    width = 0.8 / len(tables)
    for i, (system, table) in enumerate(tables.items()):
        data = [table.loc[table["machine_type"] == m, "anomaly_score"] for m in machine_types]
        positions = np.arange(len(machine_types)) + i * width - 0.4 + width / 2
        parts = ax.boxplot(
            data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False
        )
        for box in parts["boxes"]:
            box.set_facecolor(plt.cm.tab10(i))
        ax.plot([], [], color=plt.cm.tab10(i), lw=6, label=system)
    ax.set_xticks(
        np.arange(len(machine_types)),
        machine_types,
    )
    ax.set(ylabel="anomaly score", title=title)
    ax.legend()
    return fig


def training_history(
    history: pd.DataFrame, columns: list[str], group: str = "system", smooth: int = 20
) -> plt.Figure:
    """Per-step training curves (one panel per column, one line per ``group``), smoothed with a
    running mean over ``smooth`` steps."""
    fig, axes = subplots(
        1, len(columns), figsize=(3.6 * len(columns), 3.0), squeeze=False, constrained_layout=True
    )
    for ax, column in zip(axes[0], columns, strict=True):
        for name, part in history.groupby(group, sort=False):
            if column in part and part[column].notna().any():
                values = part[column].rolling(smooth, min_periods=1).mean()
                ax.plot(part["step"], values, label=name)
        name = column.replace("_", " ")
        ax.set(xlabel="optimizer step", ylabel=name, title=name)
    axes[0, 0].legend()
    return fig


def backend_comparison(
    official: pd.DataFrame, target: pd.DataFrame, floor: str | None = None
) -> plt.Figure:
    """Two panels (official score; harmonic mean of the target-domain AUCs), each with one group
    of bars per row of the frames (a system or view) and one bar per column (a back end), in %.
    ``floor``: the row drawn as dashed lines across both panels (one per back end), so every
    other bar is read against it."""
    fig, axes = subplots(
        1, 2, figsize=(max(8, 1.3 * len(official)), 3.4), sharey=True, constrained_layout=True
    )
    colours = plt.cm.tab10(np.arange(len(official.columns)))
    for ax, frame, title in zip(
        axes, (official, target), ("official score", "AUC (target), hmean"), strict=True
    ):
        rows = [r for r in frame.index if r != floor]
        x = np.arange(len(rows))
        width = 0.8 / len(frame.columns)
        for i, backend in enumerate(frame.columns):
            offset = x + i * width - 0.4 + width / 2
            ax.bar(offset, frame.loc[rows, backend], width, color=colours[i], label=backend)
            if floor is not None and floor in frame.index:
                ax.hlines(
                    frame.loc[floor, backend],
                    -0.5,
                    len(rows) - 0.5,
                    colors=colours[i],
                    ls="--",
                    lw=1,
                )
        ax.set_xticks(x, rows, rotation=20)
        ax.axhline(50, c="grey", lw=0.8, ls=":")
        ax.set(title=title, ylabel="%")
    axes[0].legend(title="back end" + (f" (dashed: {floor})" if floor else ""))
    return fig


def sweep_lines(table: pd.DataFrame, x: str, title: str, mark=None) -> plt.Figure:
    """Official score and target-domain hmean (columns ``hmean``, ``hmean_target``, in %)
    against ``x``; ``mark``: the profile's value of ``x``, a dotted line."""
    fig, ax = subplots(figsize=(4.8, 3), constrained_layout=True)
    ax.plot(table[x], table["hmean"], "o-", label="official score")
    ax.plot(table[x], table["hmean_target"], "s--", label="AUC (target), hmean")
    if mark is not None:
        ax.axvline(mark, c="grey", ls=":")
    ax.set(xlabel=x, ylabel="%", title=title)
    ax.legend()
    return fig


def snr_bands(table: pd.DataFrame, systems: list[str]) -> plt.Figure:
    """Detection against the near-microphone SNR: one panel per metric (official score, AUC
    source, AUC target, pAUC; columns ``hmean``, ``hmean_source``, ``hmean_target``,
    ``hmean_pauc`` in %), one line per system: the mean over seeds, the band ± one standard
    deviation. ``table``: one row per (snr_db, seed, system)."""
    panels = {
        "hmean": "official score",
        "hmean_source": "AUC (source)",
        "hmean_target": "AUC (target)",
        "hmean_pauc": "pAUC",
    }
    fig, axes = subplots(2, 2, figsize=(COLUMN_INCHES, 5.6), sharex=True, constrained_layout=True)
    axes = axes.flatten()
    for ax, (column, title) in zip(axes, panels.items(), strict=True):
        for system in systems:
            part = table[table["system"] == system].groupby("snr_db")[column]
            mean, std = part.mean(), part.std().fillna(0)
            ax.plot(mean.index, mean, "o-", ms=3, label=system)
            ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2)
        ax.axhline(50, c="grey", lw=0.8, ls=":")
        ax.set(title=title, xlabel="near-microphone SNR (dB)", ylabel="%")
    _legend_below(fig, axes[0])
    return fig


def view_dots(scores: pd.DataFrame, reference: str | None = None) -> plt.Figure:
    """A dot plot of official scores (%): one row per index entry of ``scores`` (e.g. a front
    end), one marker per column (e.g. a back end). The axis spans the data (not 0-100), so the
    differences show; ``reference``: the row drawn as a dotted line per column, read against;
    chance (50 %) is marked where it falls in the span."""
    fig, ax = subplots(figsize=(COLUMN_INCHES, 0.9 + 0.38 * len(scores)), constrained_layout=True)
    y = np.arange(len(scores))[::-1]
    values = scores.to_numpy(dtype=float)
    low, high = np.nanmin(values), np.nanmax(values)
    pad = max(1.0, 0.08 * (high - low))
    for i, (column, marker) in enumerate(zip(scores.columns, "osD^v", strict=False)):
        colour = plt.cm.tab10(i)
        ax.plot(scores[column], y, marker, ms=7, color=colour, label=column)
        if reference is not None and reference in scores.index:
            ax.axvline(scores.loc[reference, column], color=colour, ls=":", lw=1)
    if low - pad < 50 < high + pad:
        ax.axvline(50, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, scores.index)
    ax.set_xlim(low - pad, high + pad)
    ax.grid(axis="y", color="0.9")
    where = f" (dotted: {reference})" if reference is not None else ""
    ax.set(xlabel=f"official score (%){where}", ylabel=scores.index.name or "")
    _legend_below(fig, ax)
    return fig


def backend_heatmap(frames: dict[str, pd.DataFrame], reference: str) -> plt.Figure:
    """Back ends against each other as annotated heat maps, one panel per ``frames`` item
    (title: a frame of %, rows systems, columns back ends): each cell shows its value, its
    colour the difference from the same row's ``reference`` column (red above, blue below, in
    points), so that a few points' differences show where bars from 0 looked flat."""
    n = len(frames)
    rows = max(len(f) for f in frames.values())
    width = min(COLUMN_INCHES, 1.6 + n * (0.8 + 0.62 * max(f.shape[1] for f in frames.values())))
    fig, axes = subplots(
        1, n, figsize=(width, 1.5 + 0.3 * rows), squeeze=False, sharey=True, layout="constrained"
    )
    diffs = {t: f.sub(f[reference], axis=0) for t, f in frames.items()}
    span = max(1.0, max(float(np.nanmax(np.abs(d.to_numpy(dtype=float)))) for d in diffs.values()))
    for ax, (title, frame) in zip(axes[0], frames.items(), strict=True):
        ax.imshow(
            diffs[title].to_numpy(dtype=float), cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto"
        )
        for (i, j), value in np.ndenumerate(frame.to_numpy(dtype=float)):
            if np.isfinite(value):
                dark = abs(diffs[title].iat[i, j]) > 0.6 * span  # white text on deep colour
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", c="w" if dark else "k")
        ax.set_xticks(np.arange(frame.shape[1]), frame.columns, rotation=30, ha="right")
        ax.set_yticks(np.arange(len(frame)), frame.index)
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        ax.set(title=title, xlabel="back end")
    axes[0, 0].set_ylabel("system")
    fig.supxlabel(f"colour: points above (red) or below (blue) the same system's {reference}")
    return fig


PIPELINE = (
    ("stereo clip", "near microphone (ch 0), far microphone (ch 1)"),
    ("front end", "near · fblms (adaptive ANC) · w1 (fixed canceller) · ss · far"),
    (
        "encoder",
        "EAT or BEATs, fine-tuned (Systems 1-3, 5) or frozen (0, 6);\n"
        "autoencoder (baselines); log-mel statistics (floor)",
    ),
    ("pooling", "a vector per clip, or one per frequency band (mean, RDP)"),
    (
        "back end",
        "KNN · k-means · SMOTE · local · BEAM (+ VarMin) · Z-MIN,\n"
        "fitted on the normal training clips of each section",
    ),
    (
        "decision",
        "anomaly score > threshold (training scores' quantile);\n"
        "System 4 combines normalised scores of its members",
    ),
)


def pipeline_diagram(stages: tuple[tuple[str, str], ...] = PIPELINE) -> plt.Figure:
    """The detector's pipeline, top to bottom: one box per stage (``stages``: name, what it
    holds) joined by arrows, the stage's choices beside it; drawn for the column (10 pt)."""
    height = 0.62 * len(stages) + 0.1
    fig = plt.figure(figsize=(COLUMN_INCHES, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, COLUMN_INCHES), ylim=(height, 0))
    ax.axis("off")
    for i, (name, text) in enumerate(stages):
        y = 0.35 + 0.62 * i
        ax.text(
            0.75,
            y,
            name,
            ha="center",
            va="center",
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.35", "fc": "#e8f0fa", "ec": "#4a78b0"},
        )
        ax.text(1.65, y, text, ha="left", va="center", linespacing=1.25)
        if i + 1 < len(stages):
            ax.annotate(
                "",
                xy=(0.75, y + 0.44),
                xytext=(0.75, y + 0.18),
                arrowprops={"arrowstyle": "-|>", "color": "#4a78b0", "lw": 1.2},
            )
    return fig
