"""Tests of course_lib/synthetic.py against independent computations: counting by hand, torch.roll and
torch.rot90, a hand-written softmax, scipy.stats.t, closed-form t quantiles and analytic FLOP counts.
Everything runs on small tensors made here; no data set is needed."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from course_lib import synthetic as S
from course_lib.metrics import accuracy, train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def labels(counts: list[int]) -> torch.Tensor:
    """Shuffled labels with counts[c] examples of class c."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


def toy_images(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] whose class c lights up row block c: learnable in a few steps, (N, 1, 28, 28)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(len(y), 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 * c + 4: 2 * c + 6, 4:24] = 1.0
    return x


# ----------------------------------------------------------------------------- collect


def test_scarce_subset_has_exactly_n_per_class_and_is_nested():
    y = labels([30, 40, 25])
    for n in (1, 5, 25):
        idx = S.scarce_indices(y, n, seed=3)
        assert len(set(idx.tolist())) == len(idx) == 3 * n
        assert [int((y[idx] == c).sum()) for c in range(3)] == [n, n, n]
    small, large = set(S.scarce_indices(y, 5, seed=3).tolist()), set(S.scarce_indices(y, 20, seed=3).tolist())
    assert small <= large, "same seed: the 5-per-class set lies inside the 20-per-class set"
    assert small != set(S.scarce_indices(y, 5, seed=4).tolist()), "another seed, another subset"
    assert torch.equal(S.scarce_indices(y, 5, seed=3), S.scarce_indices(y, 5, seed=3))
    x = toy_images(y)
    xs, ys = S.scarce_subset(x, y, 5, seed=3)
    assert torch.equal(xs, x[S.scarce_indices(y, 5, seed=3)]) and torch.equal(ys, y[S.scarce_indices(y, 5, seed=3)])
    with pytest.raises(ValueError, match="class 2 has only 25"):
        S.scarce_indices(y, 26)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        S.scarce_subset(torch.zeros(len(y), 3, 28, 28), y, 5)


# ----------------------------------------------------------------------------- augment


def test_augment_keeps_shape_and_range_is_seeded_and_zero_magnitude_is_identity():
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = S.augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x, atol=1e-3), "default augmentation changes the images"
    assert torch.equal(out, S.augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, S.augment(x, torch.Generator().manual_seed(2)))
    identity = S.augment(x, torch.Generator().manual_seed(1), S.AugmentConfig(magnitude=0.0))
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


def test_warp_matches_roll_and_rot90():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    shift = 2 * 2 / 28  # two pixels in affine_grid's [-1, 1] coordinates
    theta = torch.tensor([[1.0, 0.0, -shift], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    rolled = torch.roll(x, shifts=2, dims=3)
    rolled[..., :2] = 0  # zeros come in from the left, nothing wraps around
    torch.testing.assert_close(S.warp(x, theta), rolled, atol=1e-5, rtol=0)
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(2, 2, 3)  # input = rotate(output position)
    turned = S.warp(x, quarter)
    assert any(torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))


def test_affine_matrices_stay_within_their_ranges():
    cfg = S.AugmentConfig(max_rotation_deg=15, max_shift_px=3, max_scale=0.2)
    theta = S.affine_matrices(2000, cfg, torch.Generator().manual_seed(0))  # (n, 2, 3)
    linear = theta[:, :, :2]
    scale = 1 / linear[:, 0].norm(dim=1)  # each row of the 2x2 part is (cos, -sin) / scale
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert scale.min() >= 0.8 - 1e-5 and scale.max() <= 1.2 + 1e-5 and angle.abs().max() <= 15 + 1e-4
    assert theta[:, :, 2].abs().max() <= 3 * 2 / 28 + 1e-6
    assert angle.abs().max() > 14 and theta[:, :, 2].abs().max() > 0.9 * 3 * 2 / 28, "the ranges are used"


def test_augmented_copies_gives_the_asked_count_per_class():
    y = labels([3, 7])
    xa, ya = S.augmented_copies(toy_images(y), y, 10, torch.Generator().manual_seed(0))
    assert xa.shape == (20, 1, 28, 28) and [int((ya == c).sum()) for c in (0, 1)] == [10, 10]


# ----------------------------------------------------------------------------- filter and mix


def test_filter_by_confidence_matches_a_hand_written_softmax():
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 4, (50,))
    logits = x.flatten(1) @ classifier[1].weight.T.detach() + classifier[1].bias.detach()
    p = torch.exp(logits - logits.max(1, keepdim=True).values)
    p = (p / p.sum(1, keepdim=True))[torch.arange(50), y]
    threshold = float(p.median())
    kept_x, kept_y, mask = S.filter_by_confidence(x, y, classifier, threshold)
    assert torch.equal(mask, p >= threshold) and torch.equal(kept_x, x[p >= threshold]) and torch.equal(kept_y, y[mask])
    assert S.filter_by_confidence(x, y, classifier, 0.0)[2].all()
    with pytest.raises(ValueError, match="probability"):
        S.filter_by_confidence(x, y, classifier, 1.5)


def test_mix_real_and_extra_keeps_the_real_share():
    y_real, y_extra = labels([2, 2]), labels([50, 50])
    x, yy = S.mix_real_and_extra(toy_images(y_real), y_real, toy_images(y_extra, 1), y_extra, real_share=0.5)
    n_real = len(x) - 100
    assert n_real == 100 and torch.equal(yy[:4], y_real) and torch.equal(x[:4], x[4:8]), "real images repeated 25 times"
    x2, _ = S.mix_real_and_extra(toy_images(y_real), y_real, torch.zeros(0, 1, 28, 28),
                                 torch.zeros(0, dtype=torch.long))
    assert len(x2) == 4


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 40])
def test_t_quantile_matches_scipy(df):
    for p in (0.6, 0.9, 0.975, 0.995, 0.025):
        assert S.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)


def test_t_quantile_closed_forms():
    p = 0.975
    assert S.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7)  # Cauchy
    assert S.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7)


def test_mean_ci_matches_scipy_interval():
    values = [0.71, 0.74, 0.69, 0.75, 0.72]
    m, lo, hi = S.mean_ci(values, alpha=0.1)
    ref_lo, ref_hi = stats.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert m == pytest.approx(np.mean(values)) and lo == pytest.approx(ref_lo) and hi == pytest.approx(ref_hi)
    m1, lo1, hi1 = S.mean_ci([0.5])
    assert m1 == 0.5 and math.isnan(lo1) and math.isnan(hi1)
    assert S.mean_ci([0.3, 0.3, 0.3])[1:] == (0.3, 0.3)


def test_summarize_and_paired_gains_against_hand_computation():
    rows = [dict(arm=a, per_class=5, seed=s, accuracy=acc) for a, s, acc in
            [("real", 0, 0.50), ("real", 1, 0.60), ("real", 2, 0.55),
             ("gan", 0, 0.52), ("gan", 1, 0.625), ("gan", 2, 0.572), ("gan", 3, 0.99)]]  # seed 3 has no baseline
    summary = S.summarize(rows)
    assert summary[("real", 5)][0] == pytest.approx(0.55) and summary[("gan", 5)][3] == 4
    gain = S.paired_gains(rows)[("gan", 5)]
    diffs = [0.02, 0.025, 0.022]
    ref = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert gain[0] == pytest.approx(np.mean(diffs)) and gain[1:3] == pytest.approx(ref) and gain[3] == 3
    paired_only = S.summarize(rows[:6])
    assert gain[1] > 0 and paired_only[("gan", 5)][1] < paired_only[("real", 5)][2], \
        "a consistent paired gain is significant even though the two arms' intervals overlap"
    table = S.format_table(summary, ["real", "gan", "diffusion"], [5])
    assert table.splitlines()[2].startswith("| 5 | 55.0 [") and table.endswith("| - |")


# ----------------------------------------------------------------------------- experiment


def test_run_experiment_rows_match_direct_training():
    y = labels([40, 40, 40])
    x = toy_images(y)
    y_test = labels([20, 20, 20])
    x_test = toy_images(y_test, seed=5)
    arms = {"real": S.real_only_arm(), "augment": S.augmentation_arm(8),
            "gen": S.pool_arm({4: (toy_images(labels([5, 5, 5]), 9), labels([5, 5, 5])),
                               2: (torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))})}  # empty: skipped
    kw = dict(per_class=(2, 4), seeds=(0, 1), arms=arms, classifier_steps=15, batch_size=16,
              device="cpu", progress=False)
    rows = S.run_experiment(x, y, x_test, y_test, **kw)
    assert [(r["arm"], r["per_class"], r["seed"]) for r in rows] == [
        ("real", 2, 0), ("real", 2, 1), ("augment", 2, 0), ("augment", 2, 1),
        ("real", 4, 0), ("real", 4, 1), ("augment", 4, 0), ("augment", 4, 1), ("gen", 4, 0), ("gen", 4, 1)]
    by_key = {(r["arm"], r["per_class"], r["seed"]): r for r in rows}
    assert by_key[("augment", 2, 1)]["n_extra"] == 24 and by_key[("gen", 4, 0)]["n_extra"] == 15
    xs, ys = S.scarce_subset(x, y, 4, seed=0)  # the direct computation of one run
    direct = accuracy(train_classifier(xs, ys, steps=15, batch_size=16, device="cpu", seed=1), x_test, y_test)
    assert by_key[("real", 4, 1)]["accuracy"] == direct
    again = S.run_experiment(x, y, x_test, y_test, **{**kw, "arms": {"augment": arms["augment"]}})
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows if r["arm"] == "augment"]


# ----------------------------------------------------------------------------- cost


def test_stopwatch_measures_the_clock_between_entry_and_exit(monkeypatch):
    ticks = iter([100.0, 102.5])  # a fake clock: no wall-clock bound in a unit test
    monkeypatch.setattr(S.time, "perf_counter", lambda: next(ticks))
    clock = S.Stopwatch()
    assert math.isnan(clock.seconds)  # nothing measured yet
    with clock:
        pass
    assert clock.seconds == 2.5


def test_flops_of_linear_and_conv_layers_are_analytic():
    b, d_in, d_out = 6, 7, 3
    layer = nn.Linear(d_in, d_out)
    assert S.flops_per_step(layer, torch.randn(b, d_in), backward=False) == 2 * b * d_in * d_out
    # backward: the weight gradient, and the input gradient only when the input needs one
    assert S.flops_per_step(layer, torch.randn(b, d_in)) == 4 * b * d_in * d_out
    assert S.flops_per_step(layer, torch.randn(b, d_in, requires_grad=True)) == 6 * b * d_in * d_out
    assert layer.weight.grad is None
    conv = nn.Conv2d(2, 5, 3, stride=2, padding=1)
    assert S.flops_per_step(conv, torch.randn(4, 2, 28, 28), backward=False) == 2 * 4 * 5 * 14 * 14 * 2 * 3 * 3
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with_loss = S.flops_per_step(layer, torch.randn(b, d_in), lambda out: F.cross_entropy(out, y))
    assert with_loss == 4 * b * d_in * d_out


def test_money_and_cost_per_point():
    assert S.money(3600, "gpu", prices={"gpu": 2.0}) == pytest.approx(2.0)
    assert S.money(1800) == pytest.approx(S.PRICE_PER_DEVICE_HOUR["cpu"] / 2)
    with pytest.raises(ValueError, match="No price"):
        S.money(1, "tpu")
    assert S.cost_per_point(3.0, 0.015) == pytest.approx(2.0)
    assert S.cost_per_point(3.0, -0.01) == math.inf


# ----------------------------------------------------------------------------- data card


def card(**changes) -> S.DataCard:
    base = dict(name="cfg_n10", source_data="Fashion-MNIST train, 10 per class", per_class_real=10,
                generator="conditional DDPM", training_steps=300, training_seconds=12.5, device="cpu",
                filter="p(label | x) >= 0.5", counts_per_class={"0": 40, "1": 38}, n_generated=100, copy_share=0.02,
                intended_use="teaching", limits="tiny", extra={"fcd": 31.2})
    return S.DataCard(**{**base, **changes})


def test_data_card_round_trip(tmp_path):
    json_path, md_path = S.write_data_card(card(), tmp_path)
    assert S.read_data_card(json_path) == card()
    assert json.loads(json_path.read_text())["counts_per_class"] == {"0": 40, "1": 38}
    text = md_path.read_text()
    assert "# Data card: cfg_n10" in text and "| Generated / kept | 100 / 78 |" in text and "## Limits" in text
    assert "| Filter | p(label \\| x) >= 0.5 |" in text, "a | inside a cell is escaped"
    assert all(line.count("|") - line.count("\\|") == 3 for line in text.splitlines() if line.startswith("| "))


def test_data_card_error_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        S.write_data_card(card(extra={"model": object()}), tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "other.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="not a data card"):
        S.read_data_card(tmp_path / "other.json")
