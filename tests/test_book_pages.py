"""What the book's pages add beyond the stages: others' published numbers read from a file (never
typed), clips to listen to that survive the book's path scrubbing, and the figures drawn for the
column (the pipeline diagram, the dot plot of front ends, the heat map of back ends)."""

import base64
import io
import re
import wave

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from asd_utils.report import book, listen, plots, published  # noqa: E402


def test_published_tables_hold_the_reference_figures():
    front = published.published("front_ends").set_index("front_end")
    assert front.loc["w1", "dev"] == 67.48 and front.loc["w1", "eval"] == 66.84
    assert front.loc["near", "eval"] == 62.84
    assert front.loc["ss", "eval"] < front.loc["near", "eval"]
    assert np.isnan(front.loc["ss", "dev"])  # not stated: never invented
    ladder = published.published("ladder")["dev"].to_list()
    assert ladder == [57.16, 57.94, 60.28, 61.32, 62.02]
    assert published.published("systems")["step"].iloc[0].startswith("System 6")


def test_published_tables_say_whose_and_where_from():
    text = published.sources("front_ends")
    assert "real" in text and "official pre-trained weights" in text
    assert "kasahart/asd-experiments" in text
    shown = published.shown("front_ends")
    assert "source" not in shown and shown.loc[2, "dev"] == "–"
    with pytest.raises(ValueError, match="unknown published table"):
        published.published("table2")


def _players(n_samples: int = 8000):
    rng = np.random.default_rng(0)
    near = 0.5 * rng.standard_normal(n_samples)
    clip = np.stack([near, 0.1 * near])  # the far channel 14 dB quieter
    return listen.players({"normal: a.wav": clip, "anomaly: b.wav": 2 * clip}, 16000).data


def _wavs(html: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', html)
    out = []
    for data in found:
        with wave.open(io.BytesIO(base64.b64decode(data))) as w:
            frames = w.readframes(w.getnframes())
        out.append(np.frombuffer(frames, dtype="<i2").astype(float))
    return out


def test_players_embed_both_channels_at_one_gain():
    html = _players()
    assert html.count("<audio") == 4 and "normal: a.wav" in html
    near, far, _, _ = _wavs(html)
    assert len(near) == 8000
    ratio = np.abs(far).max() / np.abs(near).max()
    assert ratio == pytest.approx(0.1, rel=0.01)  # not each normalised to its own peak
    assert np.abs(near).max() == pytest.approx(0.9 * 32767, rel=0.01)


def test_players_keep_at_most_the_first_seconds():
    clip = np.zeros((2, 16000 * 3))
    clip[:, 0] = 0.5
    html = listen.players({"long": clip}, 16000, seconds=1.0).data
    assert all(len(w) == 16000 for w in _wavs(html))


def test_scrub_leaves_embedded_audio_whole():
    html = _players()
    replacements = [("/home/someone/outputs", "<output root>")]
    text = f"read /home/someone/outputs/x.csv and /var/tmp/a/b.wav {html}"
    scrubbed = book.scrub(text, replacements)
    assert "<output root>/x.csv" in scrubbed and "/var/tmp" not in scrubbed
    assert _wavs(scrubbed)[0].tolist() == _wavs(html)[0].tolist()
    assert scrubbed.count("data:audio/wav;base64,") == 4


def _texts(figure):
    return [t for t in figure.findobj(matplotlib.text.Text) if t.get_text().strip()]


def test_pipeline_diagram_fits_the_column_at_10_pt(tmp_path):
    figure = plots.pipeline_diagram()
    assert figure.get_figwidth() <= plots.COLUMN_INCHES
    texts = _texts(figure)
    assert {"front end", "encoder", "back end"} <= {t.get_text() for t in texts}
    assert min(t.get_fontsize() for t in texts) >= 10
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox
    for t in texts:  # no text runs off the figure
        box = t.get_window_extent(renderer)
        assert box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1, t.get_text()
    svg = book.draw_pipeline(tmp_path / "pipeline.svg")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_view_dots_span_the_differences_not_zero():
    scores = pd.DataFrame(
        {"knn": [55.0, 60.0, 52.0], "beam_varmin": [57.0, 63.0, 51.0]},
        index=pd.Index(["near", "w1", "ss"], name="front end"),
    )
    figure = plots.view_dots(scores, reference="near")
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert 45 < low < 51 and 63 < high < 70
    rows = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(), strict=True))
    assert rows["near"] > rows["w1"] > rows["ss"]  # read top to bottom in the frame's order


def test_backend_heatmap_colours_the_difference_from_the_reference():
    frame = pd.DataFrame(
        {"knn": [55.0, 60.0], "beam": [57.0, 58.0], "zmin": [55.0, 61.0]},
        index=["System 1", "System 6"],
    )
    figure = plots.backend_heatmap({"official score": frame}, reference="knn")
    image = figure.axes[0].get_images()[0].get_array()
    assert image.tolist() == [[0.0, 2.0, 0.0], [0.0, -2.0, 1.0]]
    labels = [t.get_text() for t in figure.axes[0].texts]
    assert labels == ["55.0", "57.0", "55.0", "60.0", "58.0", "61.0"]
