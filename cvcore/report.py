"""Human-readable evaluation reports: per-target plots, a gallery of the worst images, an HTML page,
and contact sheets of a data set.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
reports can be drawn from worker threads and processes without a display.
"""

from __future__ import annotations

import datetime
import html
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cvcore.image import decode_image
from cvcore.metrics import DECISION_KEYS, METRIC_KEYS, baseline_metrics

# Error-by-score bins: exactly 0 (the part is not shown), then (0, 0.2], ..., (0.8, 1].
BIN_LABELS = ("0", "0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1")
GALLERY_SIZE = 16

_MODEL_COLOUR = "#1f77b4"
_BASELINE_COLOUR = "#c7c7c7"
_BAND_COLOUR = "#ffbf80"
_FIG_SIZE = (5.0, 4.6)
_DPI = 110
_STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 11.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 9.5,
    "legend.frameon": False,
}
_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu ships with matplotlib


# --------------------------------------------------------------------------- names and bins


def _short_names(targets: Sequence[str]) -> dict[str, str]:
    """Display names: the prefix all targets share (up to an underscore) is dropped, e.g.
    perspective_score_hood -> hood, unless that would leave nothing to tell them apart."""
    prefix = os.path.commonprefix(list(targets)) if len(targets) > 1 else ""
    prefix = prefix[: prefix.rfind("_") + 1]
    return {t: t[len(prefix) :] or t for t in targets}


def _slug(name: str) -> str:
    """A file-name-safe version of a target name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _score_bins(y: np.ndarray) -> np.ndarray:
    """Index into BIN_LABELS for each true score: 0 for y <= 0, k for y in (0.2(k-1), 0.2k].
    The 1e-6 keeps a float32 0.2 (0.200000003) in the bin that ends at 0.2."""
    return np.where(y <= 0, 0, np.clip(np.ceil(y / 0.2 - 1e-6), 1, len(BIN_LABELS) - 1)).astype(int)


# --------------------------------------------------------------------------- plots


def _new_figure() -> Figure:
    fig = Figure(figsize=_FIG_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_scatter(ax, true: np.ndarray, pred: np.ndarray, name: str, metrics: dict) -> None:
    """Predicted vs true on square 0..1 axes, the diagonal and the ±0.1 band."""
    line = np.array([0.0, 1.0])
    ax.fill_between(line, line - 0.1, line + 0.1, color=_BAND_COLOUR, alpha=0.35, lw=0, label="±0.1")
    ax.plot(line, line, color="black", lw=1, ls="--", label="perfect")
    alpha = float(np.clip(25 / math.sqrt(max(len(true), 1)), 0.15, 0.8))
    ax.scatter(true, pred, s=12, alpha=alpha, color=_MODEL_COLOUR, edgecolors="none")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", xlabel="true score", ylabel="predicted score")
    ax.set_title(f"{name}: predicted vs true")
    ax.legend(loc="lower right")
    ax.text(0.03, 0.97, _metric_blurb(metrics), transform=ax.transAxes, va="top", fontsize=9.5,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#cccccc"})


def _metric_blurb(metrics: dict) -> str:
    return (f"MAE {_fmt('mae', metrics['mae'])}\nR² {_fmt('r2', metrics['r2'])}\n"
            f"within 0.1: {_fmt('within_0.1', metrics['within_0.1'])}")


def _plot_residuals(ax, true: np.ndarray, pred: np.ndarray, name: str) -> None:
    """Histogram of predicted − true, stacked by whether the part is shown (true > 0) or not."""
    residual = pred - true
    reach = max(0.3, float(np.abs(residual).max(initial=0)) + 0.02)
    steps = math.ceil(reach / 0.02)
    bins = (np.arange(-steps, steps + 2) - 0.5) * 0.02  # 0.02 wide, centred on 0 (exact hits) and its multiples
    shown = true > 0
    ax.axvspan(-0.1, 0.1, color=_BAND_COLOUR, alpha=0.35, lw=0, label="±0.1")
    ax.hist([residual[shown], residual[~shown]], bins=bins, stacked=True,
            color=[_MODEL_COLOUR, _BASELINE_COLOUR], label=["true > 0", "true = 0"])
    ax.set(xlim=(-reach, reach), xlabel="predicted − true", ylabel="images")
    ax.set_title(f"{name}: residuals")
    ax.legend(loc="best")


def _plot_error_by_bin(ax, true: np.ndarray, pred: np.ndarray, name: str) -> None:
    """MAE per true-score bin, next to the all-zeros baseline (whose error is the score itself)."""
    bins = _score_bins(true)
    counts = np.bincount(bins, minlength=len(BIN_LABELS))
    with np.errstate(invalid="ignore", divide="ignore"):
        model = np.bincount(bins, np.abs(pred - true), len(BIN_LABELS)) / counts
        baseline = np.bincount(bins, np.abs(true), len(BIN_LABELS)) / counts
    x = np.arange(len(BIN_LABELS))
    ax.bar(x - 0.2, model, 0.4, color=_MODEL_COLOUR, label="model")
    ax.bar(x + 0.2, baseline, 0.4, color=_BASELINE_COLOUR, label="always 0")
    for xi, value in zip(x, model):
        if np.isfinite(value):
            ax.annotate(f"{value:.2f}", (xi - 0.2, value), ha="center", va="bottom", fontsize=8.5,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [f"{label}\nn={n}" for label, n in zip(BIN_LABELS, counts)], fontsize=9)
    top = max(0.1, np.nanmax([*model, *baseline, 0]) * 1.15)
    ax.set(xlabel="true score", ylabel="mean absolute error", ylim=(0, top))
    ax.grid(axis="x", visible=False)
    ax.set_title(f"{name}: error by true score")
    ax.legend(loc="best")


def _write_target_plots(out_dir: Path, true: np.ndarray, pred: np.ndarray, target: str, name: str,
                        metrics: dict) -> list[str]:
    """One PNG per plot kind for one target; returns their file names (relative to out_dir)."""
    plots = {
        "scatter": lambda ax: _plot_scatter(ax, true, pred, name, metrics),
        "residuals": lambda ax: _plot_residuals(ax, true, pred, name),
        "error_by_bin": lambda ax: _plot_error_by_bin(ax, true, pred, name),
    }
    files = []
    with matplotlib.rc_context(_STYLE):
        for kind, plot in plots.items():
            fig = _new_figure()
            plot(fig.add_subplot())
            files.append(f"{kind}_{_slug(target)}.png")
            fig.savefig(out_dir / files[-1])
    return files


# --------------------------------------------------------------------------- image grids


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def _fit(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """Cut `text` to `width` pixels, marking the cut with an ellipsis in the middle (file names
    differ at both ends)."""
    if font.getlength(text) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        cut = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]
        if font.getlength(cut) <= width:
            return cut
    return "…"


def contact_sheet(images_with_captions: Iterable[tuple[Image.Image | None, str | Sequence[str]]],
                  out_png: str | os.PathLike, *, columns: int = 6, thumb: int = 200) -> Path:
    """Draw a grid of thumbnails, each with a caption of one or more lines (the first in bold), to a PNG.

    Images are shrunk as they come, so a generator of full-size photos costs one photo of memory.
    An image of None is drawn as a grey "no image" tile, so one unreadable file keeps its place.
    """
    pad, line_height = 10, 17
    regular, bold = _font(13), _font(13, bold=True)
    cells = []
    for image, caption in images_with_captions:
        lines = [caption] if isinstance(caption, str) else list(caption)
        if image is not None:
            image = ImageOps.contain(image.convert("RGB"), (thumb, thumb))
        cells.append((image, lines))
    columns = max(1, min(columns, len(cells)))
    rows = math.ceil(len(cells) / columns)
    caption_height = line_height * max((len(lines) for _, lines in cells), default=0)
    cell_w, cell_h = thumb + pad, thumb + caption_height + 2 * pad
    sheet = Image.new("RGB", (columns * cell_w + pad, max(rows, 1) * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, lines) in enumerate(cells):
        left, top = pad + (index % columns) * cell_w, pad + (index // columns) * cell_h
        draw.rectangle((left, top, left + thumb - 1, top + thumb - 1), fill="#eeeeee")
        if image is None:
            draw.text((left + thumb / 2, top + thumb / 2), "no image", fill="#888888", font=regular, anchor="mm")
        else:
            sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
        for number, line in enumerate(lines):
            font = bold if number == 0 else regular
            position = (left, top + thumb + 4 + number * line_height)
            draw.text(position, _fit(line, font, thumb), fill="#222222", font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def _load_or_none(load: Callable[[str], Image.Image], filename: str) -> Image.Image | None:
    """The image, or None when it cannot be read: one bad file must not cost a whole report."""
    try:
        return load(filename)
    except Exception:  # any loader, any failure: the tile says "no image" instead
        return None


def _score_lines(row: pd.Series, targets: Sequence[str], names: dict[str, str], with_pred: bool) -> list[str]:
    if with_pred:
        return [f"{names[t]}: true {row[t]:.2f}  pred {row[f'pred_{t}']:.2f}" for t in targets]
    return [f"{names[t]}: {row[t]:.2f}" for t in targets]


def _write_gallery(out_png: Path, frame: pd.DataFrame, targets: Sequence[str], names: dict[str, str],
                   image_loader: Callable[[str], Image.Image]) -> None:
    """The GALLERY_SIZE images with the largest mean absolute error over targets, worst first."""
    errors = np.abs(frame[[f"pred_{t}" for t in targets]].to_numpy() - frame[list(targets)].to_numpy()).mean(axis=1)
    worst = frame.assign(mean_abs_error=errors).nlargest(GALLERY_SIZE, "mean_abs_error")
    contact_sheet(
        ((_load_or_none(image_loader, row["filename"]),
          [row["filename"], f"#{rank}  mean |error| {row['mean_abs_error']:.2f}",
           *_score_lines(row, targets, names, with_pred=True)])
         for rank, (_, row) in enumerate(worst.iterrows(), start=1)),
        out_png, columns=4, thumb=230,
    )




def _spread_sample(frame: pd.DataFrame, targets: Sequence[str], n: int, seed: int) -> pd.DataFrame:
    """`n` rows, lowest to highest score: a quarter scored 0 on every target, the rest spread evenly
    over the range of each row's highest score (one random row per equal-size stratum), so a sheet
    shows zeros, middling and high scores rather than mostly zeros."""
    rng = np.random.default_rng(seed)
    top_score = frame[list(targets)].max(axis=1).to_numpy()
    zeros, shown = np.flatnonzero(top_score <= 0), np.flatnonzero(top_score > 0)
    n_zeros = min(len(zeros), max(n // 4, n - len(shown)))
    n_shown = min(len(shown), n - n_zeros)
    picked = list(rng.choice(zeros, n_zeros, replace=False))
    if n_shown:
        by_score = shown[np.argsort(top_score[shown], kind="stable")]
        picked += [rng.choice(stratum) for stratum in np.array_split(by_score, n_shown)]
    return frame.iloc[sorted(picked, key=lambda i: top_score[i])]


def dataset_contact_sheet(root: str | os.PathLike, frame: pd.DataFrame, targets: Sequence[str],
                          out_png: str | os.PathLike, n: int = 24, seed: int = 0, *,
                          columns: int = 6, thumb: int = 200) -> Path:
    """A contact sheet of `n` images from `root/imgs/` with their scores, to see what labels mean.

    `frame` needs `filename` and the target columns. Picks a spread of scores (see `_spread_sample`).
    """
    names = _short_names(targets)
    images = Path(root) / "imgs"
    return contact_sheet(
        ((_load_or_none(lambda filename: decode_image(images / filename, draft_size=thumb), row["filename"]),
          [row["filename"], *_score_lines(row, targets, names, with_pred=False)])
         for _, row in _spread_sample(frame, targets, n, seed).iterrows()),
        out_png, columns=columns, thumb=thumb,
    )


# --------------------------------------------------------------------------- HTML

_HIGHER_IS_BETTER = {"mae": False, "rmse": False, "r2": True, "within_0.05": True, "within_0.1": True}
_HEADINGS = {"mae": "MAE", "rmse": "RMSE", "r2": "R²", "within_0.05": "within 0.05", "within_0.1": "within 0.1",
             "agreement": "agreement", "false_retake_rate": "false retakes", "false_accept_rate": "false accepts"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1280px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.5rem 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1.2rem; min-width: 11rem; }
.card .label { color: #666; font-size: .9rem; } .card .value { font-size: 1.8rem; font-weight: 600; }
.card .base { color: #888; font-size: .9rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .35rem .8rem; text-align: right; border-bottom: 1px solid #eee; }
th { background: #f6f6f6; } td.name, th.name { text-align: left; }
tr.target td { border-top: 2px solid #ccc; } tr.mean td { font-weight: 600; }
td .base { display: block; color: #999; font-size: .8rem; }
td.worse { background: #fde8e8; }
.plots { display: flex; gap: .5rem; flex-wrap: wrap; } .plots img { width: 32%; min-width: 320px; }
img.gallery { max-width: 100%; }
.note { color: #666; font-size: .9rem; }
"""


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f} %" if key.startswith("within") or key in DECISION_KEYS else f"{value:.3f}"


def _is_worse(key: str, model: float | None, baseline: float | None) -> bool:
    if model is None or baseline is None:
        return False
    return model < baseline if _HIGHER_IS_BETTER[key] else model > baseline


def _metric_cells(model: dict, baseline: dict) -> str:
    cells = []
    for key in METRIC_KEYS:
        worse = ' class="worse"' if _is_worse(key, model[key], baseline[key]) else ""
        cells.append(f'<td{worse}>{_fmt(key, model[key])}<span class="base">{_fmt(key, baseline[key])}</span></td>')
    return "".join(cells)


def _metrics_table(metrics: dict, baseline: dict, names: dict[str, str]) -> str:
    head = "".join(f"<th>{_HEADINGS[k]}</th>" for k in METRIC_KEYS)
    rows = [f'<tr class="mean"><td class="name">mean over targets</td><td>all</td><td>{metrics["n"]}</td>'
            f'{_metric_cells(metrics["mean"], baseline["mean"])}</tr>']
    for target, name in names.items():
        model_t, base_t = metrics["targets"][target], baseline["targets"][target]
        rows.append(f'<tr class="target"><td class="name">{html.escape(name)}</td><td>all</td>'
                    f'<td>{metrics["n"]}</td>{_metric_cells(model_t, base_t)}</tr>')
        rows.append(f'<tr><td class="name"></td><td>true &gt; 0</td><td>{model_t["nonzero"]["n"]}</td>'
                    f'{_metric_cells(model_t["nonzero"], base_t["nonzero"])}</tr>')
    return (f'<table><tr><th class="name">target</th><th>rows</th><th>n</th>{head}</tr>'
            + "".join(rows) + "</table>")


def _decisions_table(decisions: dict, names: dict[str, str]) -> str:
    """Accept/retake at the serving threshold against the true labels, per part and on average."""
    head = "".join(f"<th>{_HEADINGS[k]}</th>" for k in DECISION_KEYS)
    rows = ['<tr class="mean"><td class="name">mean over targets</td><td></td><td></td>'
            + "".join(f"<td>{_fmt(k, decisions['mean'][k])}</td>" for k in DECISION_KEYS) + "</tr>"]
    for target, name in names.items():
        values = decisions["targets"][target]
        rows.append(f'<tr><td class="name">{html.escape(name)}</td><td>{values["n_good"]}</td><td>{values["n_bad"]}</td>'
                    + "".join(f"<td>{_fmt(k, values[k])}</td>" for k in DECISION_KEYS) + "</tr>")
    return (f'<table><tr><th class="name">target</th><th>true &ge; {decisions["accept"]:g}</th>'
            f'<th>true &lt; {decisions["accept"]:g}</th>{head}</tr>' + "".join(rows) + "</table>")


def _cards(metrics: dict, baseline: dict) -> str:
    cards = []
    for key in ("mae", "within_0.1", "r2"):
        cards.append(f'<div class="card"><div class="label">{_HEADINGS[key]} (mean over targets)</div>'
                     f'<div class="value">{_fmt(key, metrics["mean"][key])}</div>'
                     f'<div class="base">always 0: {_fmt(key, baseline["mean"][key])}</div></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _decisions_section(metrics: dict, names: dict[str, str]) -> str:
    if "decisions" not in metrics:
        return ""
    accept = metrics["decisions"]["accept"]
    return (f"<h2>Intake decisions at the serving threshold {accept:g}</h2>"
            f'<p class="note">A photo is accepted for a part when its score is at least {accept:g}, as the service '
            "decides. Agreement: share of photos where the model's decision equals the true labels'. False retakes: "
            f"of the photos that truly show the part well (true &ge; {accept:g}), the share sent back. False accepts: "
            "of the others, the share accepted.</p>" + _decisions_table(metrics["decisions"], names))


def write_report(out_dir: str | os.PathLike, frame: pd.DataFrame, targets: Sequence[str], metrics: dict, *,
                 image_loader: Callable[[str], Image.Image] | None = None,
                 title: str = "Perspective score evaluation") -> Path:
    """Write the plots, the worst-images gallery (when `image_loader` is given) and `report.html`.

    `frame` has `filename`, `<target>` (true) and `pred_<target>` columns; `metrics` is the
    `regression_metrics` dict for it. The all-zeros baseline is computed here, next to the model,
    because half the labels are 0 and a low MAE alone proves little. Returns the HTML path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _short_names(targets)
    baseline = baseline_metrics(frame[list(targets)].to_numpy(), targets)
    sections = []
    for target, name in names.items():
        true = frame[target].to_numpy(dtype=float)
        pred = frame[f"pred_{target}"].to_numpy(dtype=float)
        files = _write_target_plots(out_dir, true, pred, target, name, metrics["targets"][target])
        images = "".join(f'<img src="{html.escape(f)}" alt="{html.escape(f)}">' for f in files)
        sections.append(f"<h2>{html.escape(name)}</h2><div class=\"plots\">{images}</div>")
    if image_loader is not None:
        _write_gallery(out_dir / "gallery.png", frame, targets, names, image_loader)
        sections.append(f"<h2>The {min(GALLERY_SIZE, len(frame))} worst images</h2>"
                        '<p class="note">Largest mean absolute error over the targets, worst first.</p>'
                        '<img class="gallery" src="gallery.png" alt="worst images">')
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">{metrics["n"]} images · {len(targets)} target{"s" if len(targets) != 1 else ""} · generated {generated}</p>
{_cards(metrics, baseline)}
<h2>Metrics</h2>
<p class="note">Each cell: the model, and below it in grey the all-zeros baseline; red where the model is
worse than always answering 0. "true &gt; 0" rows are the images that show the part at all.
Within x: share of images with |predicted − true| ≤ x. R² is “—” where the true scores are constant.</p>
{_metrics_table(metrics, baseline, names)}
{_decisions_section(metrics, names)}
{"".join(sections)}
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path
