"""A self-contained HTML report of one comparable group of runs: sortable tables, plots and a saliency gallery.

Everything is inline (CSS, a few lines of JavaScript, SVG plots, PNG images as data URIs), so the file opens
offline and can be mailed or put on a web page as is. Inputs are run folders only: ``record.json``,
``per_image.csv`` and ``curves.json`` for the tables (:mod:`wsseg.report.leaderboard` builds them), ``curves.json``
(or ``per_image_stats.npz``) for the plots and ``gallery.npz`` for the pictures; a run missing one of them is listed
as such, never guessed. The leaderboard is one table per class, then the budget and compute table and the lesion
size and type breakdown; the page fits a 1440-pixel-wide screen (a wider table scrolls in its own box with the rank
and method columns held, the gallery and the plots wrap). Every string that comes from a record is escaped.
The output is deterministic for the same inputs and library versions (no timestamps; matplotlib's SVG ids are
salted with a constant).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from wsseg.core import CLASSES
from wsseg.evaluation.lesions import SIZE_BINS_MM, size_bin
from wsseg.report.gallery import GALLERY_NPZ, Gallery
from wsseg.report.records import curves_for_run, method_label
from wsseg.report.tables import Table


@dataclass
class RunFiles:
    """One run of the group: its record and folder."""

    record: dict[str, Any]
    folder: Path


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue and doctype: the SVG is inlined in HTML


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "wsseg", "svg.fonttype": "none", "font.size": 9})
    return plt


def _esc(value: Any) -> str:
    """Text from a record, config, file name or dataset, escaped for HTML text and quoted attributes."""
    return html.escape(str(value), quote=True)


def _label(text: str) -> str:
    """A method name as matplotlib text, shown as written.

    ``$`` would start mathtext (a parse error, or TeX markup) and a leading ``_`` hides a legend entry; matplotlib's
    SVG writer escapes ``<``, ``>``, ``&`` and quotes itself.
    """
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _by_method(runs: Sequence[RunFiles]) -> dict[str, list[RunFiles]]:
    out: dict[str, list[RunFiles]] = {}

    def order(r: RunFiles) -> tuple[str, int, int]:
        fold = (r.record.get("dataset_info", {}).get("folds") or {}).get("fold", -1)
        return method_label(r.record), int(r.record.get("seed", 0)), int(fold)

    for r in sorted(runs, key=order):  # the lowest seed (and fold) first: the run the gallery and curves show
        out.setdefault(method_label(r.record), []).append(r)
    return out


def _color(i: int) -> str:
    palette: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    palette += ("#bcbd22", "#17becf", "#000000", "#aec7e8")
    return palette[i % len(palette)]


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def plot_curves(
    curves: dict[str, list[dict[str, Any]]], order: Sequence[str], kind: str, name: str
) -> tuple[str, dict[str, str]]:
    """One SVG figure per class: precision-recall (``pr``), FROC (``froc``) or Dice by lesion size (``size``).

    Args:
        curves: per method, the ``curves.json`` of each of its seeds in a list under ``"seeds"``.
        order: methods in table order.
        kind: ``pr``, ``froc`` or ``size``.
        name: figure title prefix.

    Returns:
        The HTML of the figures and, per class, the SVG text (for the figures folder).
    """
    plt = _pyplot()
    svgs: dict[str, str] = {}
    for c in CLASSES:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        for i, method in enumerate(order):
            seeds = curves.get(method, [])
            if not seeds:
                continue
            if kind == "pr":
                # The lowest seed's curve: seeds' curves are not averaged point by point (their thresholds differ).
                pr = seeds[0][c]["pr"]
                if pr["recall"]:
                    x, y = _floats(pr["recall"]), _floats(pr["precision"])
                    ax.step(x, y, where="post", color=_color(i), label=_label(method))
            elif kind == "froc":
                fr = seeds[0][c]["froc"]
                if fr["fppi"]:
                    x, y = _floats(fr["fppi"]), _floats(fr["sensitivity"])
                    ax.step(x, y, where="post", color=_color(i), label=_label(method))
            else:
                # Every seed scores the same test images: pool their points, then average Dice per size bin.
                bins = [size_bin(d) for s in seeds for d in _diameters(s[c]["lesion_size"])]
                dice = np.concatenate([_floats(s[c]["lesion_size"]["dice"]) for s in seeds])
                means = []
                for _, _, label in SIZE_BINS_MM:
                    inside = np.array([b == label for b in bins], dtype=bool).reshape(len(bins)) & np.isfinite(dice)
                    means.append(float(dice[inside].mean()) if inside.any() else math.nan)
                ax.plot(range(len(means)), means, marker="o", color=_color(i), label=_label(method))
        if kind == "pr":
            ax.set(xlabel="recall (pixels)", ylabel="precision (pixels)", xlim=(0, 1), ylim=(0, 1))
            ax.set_title(f"{c}: precision-recall behind PxAP (lowest seed)")
        elif kind == "froc":
            ax.set(xlabel="false positives per image", ylabel="lesion sensitivity", ylim=(0, 1))
            ax.set_xscale("symlog", linthresh=0.25)
            ax.set_xlim(left=0)  # symlog would otherwise show an empty negative half
            ax.set_title(f"{c}: FROC (lowest seed)")
        else:
            ax.set_xticks(range(len(SIZE_BINS_MM)), [label for _, _, label in SIZE_BINS_MM])
            ax.set(xlabel="equivalent diameter of the largest lesion", ylabel="mean Dice", ylim=(0, None))
            ax.set_title(f"{c}: Dice against lesion size (all seeds)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="best")
        svgs[c] = _svg(fig)
        plt.close(fig)
    body = "".join(f'<figure class="plot">{svgs[c]}</figure>' for c in CLASSES)
    return f'<div class="plots" id="{name}">{body}</div>', svgs


def _diameters(block: dict[str, Any]) -> list[float]:
    """Each lesion image's equivalent diameter (mm); from the whole lesion area in curves.json files that predate it."""
    if "diameter_mm" in block:
        return [float(v) for v in _floats(block["diameter_mm"])]
    return [float(v) for v in 2.0 * np.sqrt(_floats(block["area_mm2"]) / math.pi)]


def _png(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _outline(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask & ~ndimage.binary_erosion(mask))


def overlay(image: np.ndarray, saliency: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8: the mammogram in grey, the map as a heat overlay, the ground truth outlined in cyan."""
    from matplotlib import colormaps

    grey = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    if saliency is not None:
        s = saliency.astype(np.float32) / 255.0
        heat = colormaps["inferno"](s)[..., :3]
        alpha = 0.65 * s[..., None]
        grey = grey * (1 - alpha) + heat * alpha
    rgb = (grey * 255).round().astype(np.uint8)
    rgb[_outline(mask)] = (0, 255, 255)
    return rgb


def gallery_html(runs: dict[str, list[RunFiles]], order: Sequence[str]) -> str:
    """The gallery: per image, a block of captioned tiles that wraps at the page width.

    The tiles: the image with its outline, then each method's map of that class (the same order and tile width in
    every block, so the methods line up).
    """
    galleries: dict[str, Gallery] = {}
    missing = []
    for method in order:
        first = runs[method][0]
        # The record names its gallery file: only a plain name inside the run folder is followed.
        name = Path(str(first.record.get("gallery") or GALLERY_NPZ)).name
        path = first.folder / name
        if path.is_file():
            galleries[method] = Gallery.load(path)
            odd = [c for c in galleries[method].lesion_class if c not in CLASSES]
            if odd:
                raise ValueError(
                    f"{path}: lesion class {odd[0]!r} is not one of {', '.join(CLASSES)}; re-make it with "
                    "`wsseg gallery --run RUN`"
                )
        else:
            missing.append(method)
    if not galleries:
        return "<p>No run of this group has a saliency gallery (gallery.npz); re-make one with `wsseg gallery`.</p>"
    ref = next(iter(galleries.values()))
    for method, g in galleries.items():
        if g.image_ids != ref.image_ids:
            raise ValueError(
                f"the gallery of {method} shows other images than the others' ({g.image_ids} vs {ref.image_ids}); "
                "re-make it with `wsseg gallery --run RUN`"
            )
    shown = [m for m in order if m in galleries]
    blocks = []
    for i, (image_id, c) in enumerate(zip(ref.image_ids, ref.lesion_class, strict=True)):
        k = CLASSES.index(c)
        mask = ref.masks[i, k]
        tiles = [_tile(_png(overlay(ref.images[i], None, mask)), str(image_id), "ground truth")]
        for m in shown:
            tiles.append(_tile(_png(overlay(ref.images[i], galleries[m].maps[i, k], mask)), f"{m} {image_id}", m))
        blocks.append(
            f'<div class="gallery"><p class="rowhead">{_esc(image_id)} <span class="{c}">{c}</span></p>'
            f'<div class="tiles">{"".join(tiles)}</div></div>'
        )
    note = f"<p>No gallery for: {_esc(', '.join(missing))}.</p>" if missing else ""
    return f"{''.join(blocks)}{note}"


def _tile(src: str, alt: str, caption: str) -> str:
    """One picture of the gallery with its caption (``src`` is a PNG data URI made here)."""
    return f'<figure class="tile"><img alt="{_esc(alt)}" src="{src}"><figcaption>{_esc(caption)}</figcaption></figure>'


def table_html(table: Table) -> str:
    """One leaderboard table as a sortable HTML table (click a column title; numbers sort numerically)."""
    head = "".join(f'<th data-col="{i}">{_esc(h)}</th>' for i, h in enumerate(table.header))
    counts: list[str] = []
    body: list[str] = []
    kinds = table.row_classes or [""] * len(table.cells)
    for line, kind in zip(table.cells, kinds, strict=True):
        tds = "".join(f"<td>{_esc(c)}</td>" for c in line)
        # A count row (images per bin) belongs to the header: sorting the methods must not move it.
        # A CSS class from the record: only the known kinds are kept as classes.
        css = kind if kind in ("weak", "full", "reference", "chance", "count") else "other"
        (counts if kind == "count" else body).append(f'<tr class="{css}">{tds}</tr>')
    return (
        f"<h3>{_esc(table.heading)}</h3>"
        f'<div class="scroll"><table class="leaderboard sortable"><thead><tr>{head}</tr>{"".join(counts)}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# The page fits a 1440-pixel screen: the body is at most 1380 px wide, a table wider than that scrolls inside its
# own box with the rank and method columns held in place (sticky), and the gallery and plots wrap onto new lines.
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1380px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em;margin:1.2em 0 .4em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
.leaderboard th{white-space:normal;vertical-align:bottom;max-width:7.5em}
.leaderboard th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}
.leaderboard th.asc::after{content:" \\25B2"}.leaderboard th.desc::after{content:" \\25BC"}
.leaderboard td{background:#fff}
.leaderboard td:nth-child(-n+2){position:sticky;z-index:1}.leaderboard th:nth-child(-n+2){z-index:2}
.leaderboard :is(td,th):nth-child(1){left:0;width:3.5em;min-width:3.5em;max-width:3.5em;box-sizing:border-box}
.leaderboard :is(td,th):nth-child(2){left:3.5em}
.leaderboard td:nth-child(2){text-align:left;font-weight:600}
tr.full td{background:#eef6ff}tr.reference td{background:#f6f6f6;color:#666}
tr.chance td{background:#fff6e6;color:#666}tr.count td{font-style:italic;background:#fafafa}
.gallery{margin:.6em 0}.rowhead{font-size:12px;margin:.2em 0}
.tiles{display:flex;flex-wrap:wrap;gap:6px}
.tile{margin:0;font-size:11px;text-align:center}.tile img{display:block;height:192px}
.tile figcaption{width:0;min-width:100%;overflow-wrap:anywhere;padding-top:2px}
.benign{color:#2a8a2a}.malignant{color:#c02020}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{margin:0;max-width:100%}
.plot svg{width:520px;max-width:100%;height:auto}
.note{color:#555;font-size:13px;max-width:1100px}
"""

SCRIPT = """
function cellValue(row, col){const t=row.children[col].textContent.trim();
  const n=parseFloat(t.replace(/[^0-9.eE+-]/g,''));return (t===''||t==='-'||isNaN(n))?null:n;}
function sortBy(th){const table=th.closest('table');const col=+th.dataset.col;
  const asc=!th.classList.contains('asc');table.querySelectorAll('th').forEach(h=>h.classList.remove('asc','desc'));
  th.classList.add(asc?'asc':'desc');const body=table.tBodies[0];const rows=Array.from(body.rows);
  rows.sort((a,b)=>{const x=cellValue(a,col),y=cellValue(b,col);
    if(x===null&&y===null){return a.children[col].textContent.localeCompare(b.children[col].textContent)*(asc?1:-1);}
    if(x===null)return 1;if(y===null)return -1;return asc?x-y:y-x;});
  rows.forEach(r=>body.appendChild(r));}
document.querySelectorAll('table.sortable th[data-col]').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
window.addEventListener('load',()=>{const imgs=Array.from(document.images);
  const broken=imgs.filter(i=>!i.complete||i.naturalWidth===0).length;
  const hidden=Math.max(0,...Array.from(document.querySelectorAll('.scroll'),e=>e.scrollWidth-e.clientWidth));
  document.body.dataset.rendered='rows='+document.querySelector('table.leaderboard tbody').rows.length+
    ' images='+imgs.length+' broken='+broken+' svgs='+document.querySelectorAll('svg').length+
    ' width='+document.documentElement.scrollWidth+' hidden='+hidden;});
"""


def render_report(
    title: str,
    tables: Sequence[Table],
    paragraphs: Sequence[str],
    lesion_tables: Sequence[Table],
    lesion_notes: Sequence[str],
    runs: Sequence[RunFiles],
    order: Sequence[str],
) -> tuple[str, dict[str, str]]:
    """The report's HTML and its figures as ``{file name: SVG text}``.

    Args:
        title: the group's title.
        tables: the leaderboard's tables (:func:`wsseg.report.leaderboard.main_tables`).
        paragraphs: the rank-stability line and the notes under them.
        lesion_tables: the breakdown by lesion size and type, and its notes below.
        lesion_notes: the notes of the breakdown.
        runs: every run of the group.
        order: methods in table order.
    """
    by_method = _by_method(runs)
    order = [m for m in order if m in by_method]
    curves: dict[str, list[dict[str, Any]]] = {}
    no_curves = []
    for m in order:
        found = [c for r in by_method[m] if (c := curves_for_run(r.folder, r.record)) is not None]
        if found:
            curves[m] = found
        else:
            no_curves.append(m)
    figures: dict[str, str] = {}
    sections = []
    for kind, heading, name in (
        ("size", "Dice against lesion size", "dice-by-size"),
        ("pr", "Pixel precision-recall (the curve behind PxAP)", "pr"),
        ("froc", "FROC: lesion sensitivity against false positives per image", "froc"),
    ):
        block, svgs = plot_curves(curves, order, kind, name)
        figures.update({f"{name}-{c}.svg": s for c, s in svgs.items()})
        sections.append(f"<h2>{_esc(heading)}</h2>{block}")
    if no_curves:
        names = _esc(", ".join(no_curves))
        sections.append(f"<p class='note'>No curves (curves.json or per_image_stats.npz) for: {names}.</p>")

    def notes(texts: Sequence[str]) -> str:
        return "".join(f"<p class='note'>{_esc(t)}</p>" for t in texts)

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>wsseg leaderboard</h1><p>{_esc(title)}</p>"
        f"{''.join(table_html(t) for t in tables)}{notes(paragraphs)}"
        f"<h2>By lesion size and type</h2>{''.join(table_html(t) for t in lesion_tables)}{notes(lesion_notes)}"
        "<p class='note'>Click a column title to sort a table.</p>"
        "<h2>Saliency gallery</h2><p class='note'>The same test images for every method (the first test images "
        "with a lesion of one class only); each method's map of that class as a heat overlay (the lowest seed's "
        "run), the ground truth outlined in cyan.</p>"
        f"{gallery_html(by_method, order)}{''.join(sections)}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
    return page, figures


def report_files(
    path: Path,
    title: str,
    tables: Sequence[Table],
    paragraphs: Sequence[str],
    lesion_tables: Sequence[Table],
    lesion_notes: Sequence[str],
    runs: Sequence[RunFiles],
    order: Sequence[str],
) -> dict[Path, str]:
    """The HTML report of one group (at ``path``) and its SVG plots (under ``figures/`` beside it), not written.

    Rendering everything first means that a damaged curves or gallery file stops the leaderboard before it has
    written half of its files.
    """
    page, figures = render_report(title, tables, paragraphs, lesion_tables, lesion_notes, runs, order)
    files = {path: page}
    for name, svg in sorted(figures.items()):
        files[path.parent / "figures" / f"{path.stem.removeprefix('leaderboard-')}-{name}"] = svg + "\n"
    return files
