import json

import matplotlib

matplotlib.use("Agg")  # this test process only; never exported to notebook kernels
import pytest
import torch

from course_lib.results import load_results, record_results
from course_lib.train import History
from course_lib.viz import animate, plot_history, show_images, side_by_side


def test_show_images_lays_out_a_grid():
    ax = show_images(torch.rand(10, 1, 28, 28), nrow=5, title="t")
    h, w, _ = ax.images[0].get_array().shape
    assert (h, w) == (2 + 2 * 30, 2 + 5 * 30)  # make_grid: 2 px padding around 28 px tiles
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        show_images(torch.rand(28, 28))


def test_show_images_maps_value_range():
    ax = show_images(torch.full((1, 1, 4, 4), -1.0), nrow=1, value_range=(-1, 1))
    assert ax.images[0].get_array()[3, 3, 0] == 0.0


def test_side_by_side_labels_rows():
    fig = side_by_side({"noisy": torch.rand(4, 1, 8, 8), "clean": torch.rand(4, 1, 8, 8)}, n=4)
    assert [ax.get_ylabel() for ax in fig.axes] == ["noisy", "clean"]


def test_plot_history_from_history_and_dict():
    h = History()
    for s in range(0, 50, 10):
        h.log(s, loss=1 / (s + 1))
    ax = plot_history(h)
    assert list(ax.lines[0].get_xdata()) == [0, 10, 20, 30, 40]
    ax = plot_history({"a": [3, 2, 1], "b": [1, 2, 3]})
    assert len(ax.lines) == 2


def test_animate_renders_every_frame_inline():
    frames = [torch.rand(4, 1, 8, 8) for _ in range(3)]
    html = animate(frames, titles=["a", "b", "c"]).data
    assert "<script" in html and html.count("data:image/png;base64") == 3


def test_record_results_writes_the_documented_format(tmp_path):
    path = record_results("03_vae", {"test_neg_elbo_nats": 98.4, "epochs": 3}, profile="cpu",
                          wall_time_s=412.71, out_dir=tmp_path)
    assert path == tmp_path / "03_vae" / "cpu.json"
    rec = json.loads(path.read_text())
    assert set(rec) == {"notebook", "profile", "device", "wall_time_s", "commit", "created", "metrics"}
    assert rec["wall_time_s"] == 412.7 and rec["metrics"] == {"test_neg_elbo_nats": 98.4, "epochs": 3.0}
    assert rec["created"].endswith("Z") and rec["commit"]
    assert [r["notebook"] for r in load_results(tmp_path)] == ["03_vae"]
    assert [p.name for p in (tmp_path / "03_vae").iterdir()] == ["cpu.json"], "no temporary files are left behind"


@pytest.mark.parametrize("metrics, match", [
    ({"Test Loss": 1.0}, "snake_case"),
    ({"loss_nats": float("nan")}, "finite"),
])
def test_record_results_rejects_bad_metrics(tmp_path, metrics, match):
    with pytest.raises(ValueError, match=match):
        record_results("03_vae", metrics, profile="cpu", out_dir=tmp_path)


def test_record_results_rejects_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match="Unknown profile"):
        record_results("03_vae", {"x_loss": 1.0}, profile="tpu", out_dir=tmp_path)


def test_smoke_records_go_to_a_temporary_folder(monkeypatch):
    # conftest points COURSE_RESULTS away from the committed results/ folder
    from course_lib.results import results_dir
    from pathlib import Path

    assert Path(results_dir()).resolve() != (Path(__file__).parents[1] / "results").resolve()


def test_a_dry_run_records_into_a_temporary_folder_only(tmp_path, monkeypatch, capsys):
    # a dry run's numbers come from capped steps: neither results/ nor an explicit folder may receive them
    monkeypatch.setenv("COURSE_DRY_RUN", "1")
    monkeypatch.delenv("COURSE_RESULTS", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    path = record_results("03_vae", {"test_neg_elbo_nats": 98.4}, profile="gpu", out_dir=tmp_path / "given")
    assert path == tmp_path / "tmp" / "course_dry_run" / "results" / "03_vae" / "gpu.json"
    assert json.loads(path.read_text(encoding="utf-8"))["metrics"] == {"test_neg_elbo_nats": 98.4}
    assert not (tmp_path / "given").exists()
    assert "Dry run" in capsys.readouterr().out
