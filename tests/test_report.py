"""Reports and contact sheets on small synthetic frames and Pillow images: the files exist, the page
links every plot, and awkward inputs (missing images, constant targets) still give a report."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cvcore.metrics import regression_metrics
from cvcore.report import (
    GALLERY_SIZE,
    _score_bins,
    _spread_sample,
    contact_sheet,
    dataset_contact_sheet,
    write_report,
)

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]


def _frame(n=40, seed=0, targets=TARGETS):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"filename": [f"car_{i:03d}.jpg" for i in range(n)]})
    for target in targets:
        true = np.where(rng.random(n) < 0.5, 0.0, rng.random(n).round(2))
        frame[target] = true
        frame[f"pred_{target}"] = np.clip(true + rng.normal(0, 0.1, n), 0, 1)
    return frame


def _image(filename):
    index = int(filename[4:7])
    return Image.new("RGB", (64 + index, 48), (index * 6 % 256, 90, 200))


def _report(tmp_path, frame, targets=TARGETS, **kwargs):
    metrics = regression_metrics(frame[targets].to_numpy(), frame[[f"pred_{t}" for t in targets]].to_numpy(), targets)
    html_path = write_report(tmp_path / "report", frame, targets, metrics, **kwargs)
    return html_path, html_path.read_text(encoding="utf-8")


def test_report_links_every_plot_and_the_gallery(tmp_path):
    html_path, page = _report(tmp_path, _frame(), image_loader=_image, title="Demo <run>")
    assert html_path == tmp_path / "report" / "report.html"
    pngs = {p.name for p in html_path.parent.glob("*.png")}
    linked = set(re.findall(r'<img [^>]*src="([^"]+)"', page))
    assert pngs == linked
    assert len(pngs) == 3 * len(TARGETS) + 1 and "gallery.png" in pngs
    for png in pngs:
        with Image.open(html_path.parent / png) as image:
            assert image.width > 300
    assert "Demo &lt;run&gt;" in page  # escaped
    assert ">hood<" in page and ">backdoor_left<" in page  # shared prefix dropped for display
    assert "always 0" in page and "true &gt; 0" in page


def test_report_without_loader_has_no_gallery(tmp_path):
    html_path, page = _report(tmp_path, _frame())
    assert not (html_path.parent / "gallery.png").exists()
    assert "gallery.png" not in page


def test_gallery_survives_unreadable_images(tmp_path):
    def loader(filename):
        if filename.endswith("7.jpg"):
            raise OSError("gone")
        return _image(filename)

    html_path, _ = _report(tmp_path, _frame(n=GALLERY_SIZE + 4), image_loader=loader)
    assert (html_path.parent / "gallery.png").exists()


def test_report_with_a_constant_target(tmp_path):
    frame = _frame(n=10, targets=["hood"])
    frame["hood"] = 0.0
    _, page = _report(tmp_path, frame, targets=["hood"])
    assert "—" in page  # R² undefined, shown as a dash


def test_contact_sheet_grid_size_and_captions(tmp_path):
    items = [(_image(f"car_{i:03d}.jpg"), [f"car_{i:03d}.jpg", "hood: 0.50"]) for i in range(6)]
    items.append((None, "a very long caption that does not fit under a small thumbnail at all"))
    out = contact_sheet(items, tmp_path / "sheet.png", columns=3, thumb=80)
    with Image.open(out) as sheet:
        assert sheet.width == 3 * (80 + 10) + 10
        assert sheet.height == 3 * (80 + 2 * 17 + 20) + 10  # 3 rows, captions of up to 2 lines


def test_spread_sample_mixes_zeros_and_high_scores():
    frame = _frame(n=200)
    sample = _spread_sample(frame, TARGETS, n=12, seed=1)
    top = sample[TARGETS].max(axis=1)
    assert len(sample) == 12 and sample["filename"].is_unique
    assert (top == 0).sum() >= 3 and top.max() > 0.8
    assert top.is_monotonic_increasing
    assert sample.equals(_spread_sample(frame, TARGETS, n=12, seed=1))
    assert len(_spread_sample(frame.head(5), TARGETS, n=12, seed=1)) == 5


def test_dataset_contact_sheet_reads_root_imgs(tmp_path):
    frame = _frame(n=30)
    (tmp_path / "imgs").mkdir()
    for filename in frame["filename"][:-1]:  # the last image is missing: drawn as a placeholder
        _image(filename).save(tmp_path / "imgs" / filename)
    out = dataset_contact_sheet(tmp_path, frame, TARGETS, tmp_path / "sheet.png", n=30, seed=0)
    with Image.open(out) as sheet:
        assert sheet.width > 6 * 200


@pytest.mark.parametrize(
    ("score", "bin_index"),
    [(0.0, 0), (1e-9, 1), (0.2, 1), (np.float32(0.2), 1), (0.2000001 + 1e-5, 2), (0.6, 3), (0.8, 4), (1.0, 5)],
)
def test_score_bins(score, bin_index):
    assert _score_bins(np.array([float(score)]))[0] == bin_index


def test_contact_sheet_command_draws_a_data_set_and_refuses_a_missing_one(tmp_path, capsys):
    from cvcore.synth import write_dataset
    from ray_jobs import contact_sheet

    write_dataset(tmp_path / "d", 8, seed=1, workers=1, progress=False, image_size=(80, 60))
    contact_sheet.main([str(tmp_path / "d"), "--n", "4"])
    assert (tmp_path / "d" / "contact_sheet.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        from cvcore.config import run

        run(contact_sheet.main, [str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_contact_sheets_open_photos_through_the_safe_decoder(tmp_path, monkeypatch):
    """The pixel limit and the other checks of cvcore.image apply to the report's photos too: an image
    over the limit becomes a "no image" tile instead of being decoded."""
    import cvcore.report
    from cvcore.image import decode_image
    from tests.hostile import lossless_webp_rgba

    frame = _frame(n=3)
    (tmp_path / "imgs").mkdir()
    _image(frame["filename"][0]).save(tmp_path / "imgs" / frame["filename"][0])
    _image(frame["filename"][1]).save(tmp_path / "imgs" / frame["filename"][1])
    (tmp_path / "imgs" / frame["filename"][2]).write_bytes(lossless_webp_rgba(9000, 8000))  # 72 MP in a few bytes
    calls, refused = [], []

    def spy(path, **kwargs):
        calls.append((path.name, kwargs))
        try:
            return decode_image(path, **kwargs)
        except Exception as err:
            refused.append(str(err))
            raise

    monkeypatch.setattr(cvcore.report, "decode_image", spy)
    dataset_contact_sheet(tmp_path, frame, TARGETS, tmp_path / "sheet.png", n=3, thumb=100)
    assert sorted(name for name, _ in calls) == sorted(frame["filename"]) and all(kw == {"draft_size": 100} for _, kw in calls)
    assert len(refused) == 1 and "over the limit" in refused[0]
