"""Tests of course_lib/metrics.py against brute-force loops and analytic values.

The CAS tests need MNIST under ``COURSE_DATA`` (offline copy); nothing touches the network.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from course_lib import metrics
from course_lib.data import load_mnist

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


# ----------------------------------------------------------------------------- KID


def mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 formula with the cubic kernel, term by term."""
    m, d = x.shape

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


def cubic_kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
    """E k(x, y) for independent x ~ N(a, I), y ~ N(b, I) in d dims, k = (x.y / d + 1)^3.

    With s = x.y: E s = a.b, E s^2 = (a.b)^2 + |a|^2 + |b|^2 + d,
    E s^3 = (a.b)^3 + 3 (a.b)(|a|^2 + |b|^2 + d + 2)  (condition on y: s | y ~ N(a.y, |y|^2)).
    """
    d, ab, aa, bb = len(a), a @ b, a @ a, b @ b
    s1, s2, s3 = ab, ab**2 + aa + bb + d, ab**3 + 3 * ab * (aa + bb + d + 2)
    return s3 / d**3 + 3 * s2 / d**2 + 3 * s1 / d + 1


def population_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    return cubic_kernel_mean(a, a) + cubic_kernel_mean(b, b) - 2 * cubic_kernel_mean(a, b)


def test_mmd2_unbiased_matches_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.3
    assert metrics.mmd2_unbiased(torch.tensor(x), torch.tensor(y)) == pytest.approx(mmd2_loops(x, y), rel=1e-10)
    # kid with one subset covering both sets is exactly that estimate (std 0).
    mean, std = metrics.kid(torch.tensor(x, dtype=torch.float32), torch.tensor(y), n_subsets=1, subset_size=50)
    assert mean == pytest.approx(mmd2_loops(x, y), rel=1e-5) and std == 0.0
    with pytest.raises(ValueError, match="equal size"):
        metrics.mmd2_unbiased(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="features per row"):
        metrics.kid(torch.zeros(10, 2), torch.zeros(10, 3))


def test_mmd2_unbiased_has_the_population_value_in_expectation():
    # Many tiny independent sets: the mean estimate must hit the analytic MMD^2 (the biased
    # V-statistic would be off by about 2 (E k(x, x) - E k(x, x')) / m, i.e. ~1.3 here).
    g = torch.Generator().manual_seed(1)
    a, b = np.zeros(2), np.array([1.0, 0.0])
    m, reps = 20, 1500
    est = [metrics.mmd2_unbiased(torch.randn(m, 2, generator=g), torch.randn(m, 2, generator=g) + torch.tensor(b))
           for _ in range(reps)]
    target = population_mmd2(a, b)  # 4.625
    assert np.mean(est) == pytest.approx(target, abs=4 * np.std(est) / np.sqrt(reps))
    assert abs(np.mean(est) - target) < 0.15 * target


def test_kid_same_distribution_near_zero_and_grows_with_shift():
    g = torch.Generator().manual_seed(2)
    d = 8
    real = torch.randn(2000, d, generator=g)
    same = torch.randn(2000, d, generator=g)
    mean, std = metrics.kid(real, same, n_subsets=50, subset_size=200, generator=g)
    assert abs(mean) < 3 * std
    values = []
    for shift in (0.25, 0.5, 1.0):
        fake = torch.randn(2000, d, generator=g) + shift
        values.append(metrics.kid(real, fake, n_subsets=50, subset_size=500, generator=g))
        target = population_mmd2(np.zeros(d), np.full(d, shift))
        assert values[-1][0] == pytest.approx(target, rel=0.3)  # analytic population MMD^2 (finite data)
    means = [v[0] for v in values]
    assert means[0] > 3 * values[0][1] and means[0] < means[1] < means[2]
    # Deterministic given a seeded generator.
    run = [metrics.kid(real, same, 5, 100, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert run[0] == run[1]


# ----------------------------------------------------------------------------- precision, recall


def pr_loops(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage with plain Python loops."""
    def dist(a, b):
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radii(x):
        return [sorted(dist(x[i], x[j]) for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))]

    r_real, r_fake = radii(real), radii(fake)
    inside = [[dist(y, x) <= r for x, r in zip(real, r_real)] for y in fake]  # [fake][real]
    return dict(
        precision=np.mean([any(row) for row in inside]),
        recall=np.mean([any(dist(x, y) <= r for y, r in zip(fake, r_fake)) for x in real]),
        density=sum(map(sum, inside)) / (k * len(fake)),
        coverage=np.mean([any(row[i] for row in inside) for i in range(len(real))]),
    )


def test_precision_recall_matches_brute_force_loops():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((33, 3)) * 1.5 + 0.7
    expected = pr_loops(real, fake, k=3)
    assert 0 < expected["precision"] < 1 and 0 < expected["recall"] < 1  # a non-trivial case
    for chunk in (1024, 7):  # several blocks, the last one partial
        got = metrics.precision_recall(torch.tensor(real), torch.tensor(fake), k=3, chunk=chunk)
        assert got == pytest.approx(expected, abs=1e-12)


def four_modes(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [-10.0, -10.0], [10.0, -10.0]])
    mode = torch.randint(0, 4, (n,), generator=g)
    return centres[mode] + torch.randn(n, 2, generator=g), mode


def test_precision_recall_toy_cases():
    g = torch.Generator().manual_seed(4)
    real, mode = four_modes(800, g)
    same = metrics.precision_recall(real, real.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = metrics.precision_recall(real, real + 100.0)
    assert far == dict(precision=0.0, recall=0.0, density=0.0, coverage=0.0)
    # A subset covering two of four modes: every fake point is real, half the real points are missed.
    half = mode < 2
    pr = metrics.precision_recall(real, real[half])
    assert pr["precision"] == 1.0
    assert pr["recall"] == pytest.approx(half.double().mean().item(), abs=1e-12)
    assert pr["recall"] == pytest.approx(0.5, abs=0.06)
    # Fresh draws from the same two modes: precision near 1; recall and coverage near the share of
    # real points in those two modes (about 1/2).
    fresh, fresh_mode = four_modes(1600, g)
    pr = metrics.precision_recall(real, fresh[fresh_mode < 2])
    share = (mode < 2).double().mean().item()  # real points in the produced modes
    assert pr["precision"] > 0.93 and abs(pr["recall"] - share) < 0.05 and abs(pr["coverage"] - share) < 0.05
    assert 0.8 < pr["density"] < 1.25  # ~1 where the fake density matches the real one
    with pytest.raises(ValueError, match="more than k=3"):
        metrics.precision_recall(real, real[:3])


# ----------------------------------------------------------------------------- memorization


def test_nearest_neighbours_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(5)
    q, ref = torch.randn(23, 6, generator=g), torch.randn(40, 6, generator=g)
    brute = torch.cdist(q.double(), ref.double(), compute_mode="donot_use_mm_for_euclid_dist")
    order = [sorted(range(40), key=lambda j: brute[i, j].item())[:4] for i in range(23)]
    for chunk in (1024, 5):
        d, idx = metrics.nearest_neighbours(q, ref, k=4, chunk=chunk)
        assert d.shape == idx.shape == (23, 4) and d.dtype == torch.float64
        assert idx.tolist() == order
        for i, j in itertools.product(range(23), range(4)):
            exact = float(np.linalg.norm(q[i].double().numpy() - ref[order[i][j]].double().numpy()))
            assert d[i, j].item() == pytest.approx(exact, rel=1e-9)
    # Images are flattened: (N, 1, 28, 28) works like (N, 784).
    imgs = torch.rand(4, 1, 28, 28, generator=g)
    d_img, i_img = metrics.nearest_neighbours(imgs, imgs.flip(0))
    assert i_img[:, 0].tolist() == [3, 2, 1, 0] and d_img.max() < 1e-6
    with pytest.raises(ValueError, match="k must be"):
        metrics.nearest_neighbours(q, ref, k=41)


def test_memorization_report_copies_fresh_draws_and_duplicates():
    g = torch.Generator().manual_seed(6)
    d = 10
    train, heldout = torch.randn(2000, d, generator=g), torch.randn(2000, d, generator=g)
    pick = torch.randperm(2000, generator=g)[:300]
    copies = metrics.memorization_report(train[pick], train, heldout=heldout, chunk=128)
    assert copies["copy_share"] == 1.0 and copies["sample_distances"].max() < 1e-6
    assert copies["nearest_train_index"].tolist() == pick.tolist()
    assert copies["heldout_copy_share"] <= 0.01  # by construction of the 1st-percentile threshold
    assert copies["threshold"] == pytest.approx(np.quantile(copies["heldout_distances"].numpy(), 0.01))
    # Fresh draws from the training distribution land below the p-th percentile about p % of the time.
    fresh = torch.randn(3000, d, generator=g)
    for p in (1.0, 10.0):
        rep = metrics.memorization_report(fresh, train, heldout=heldout, percentile=p)
        assert rep["copy_share"] == pytest.approx(p / 100, abs=0.3 * p / 100 + 0.005)
    assert rep["sample_median_distance"] == pytest.approx(rep["heldout_median_distance"], rel=0.05)
    # Duplicates: 100 samples repeated once each, with a threshold far below natural distances.
    dup = torch.cat([fresh[:900], fresh[:100]])
    rep = metrics.memorization_report(dup, train, threshold=1e-6, chunk=64)
    assert rep["duplicate_pairs"] == 100 and rep["duplicate_share"] == pytest.approx(0.2)
    assert "heldout_distances" not in rep and rep["copy_share"] == 0.0
    # The held-out reference: share of held-out points with another one closer than the threshold.
    rep = metrics.memorization_report(fresh[:1000], train, heldout=heldout, percentile=10.0)
    within = torch.cdist(heldout.double(), heldout.double()).fill_diagonal_(float("inf"))
    expected = (within.min(1).values < rep["threshold"]).double().mean().item()
    assert 0 < expected and rep["heldout_duplicate_share"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="heldout"):
        metrics.memorization_report(fresh, train)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_of_a_mean_matches_the_normal_interval():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1000, generator=g, dtype=torch.float64)
    est, low, high = metrics.bootstrap_ci(torch.mean, x, n_boot=1000, generator=torch.Generator().manual_seed(0))
    half = 1.96 * x.std().item() / np.sqrt(len(x))
    assert est == pytest.approx(x.mean().item()) and low < est < high
    assert low == pytest.approx(est - half, abs=0.15 * half) and high == pytest.approx(est + half, abs=0.15 * half)
    again = metrics.bootstrap_ci(torch.mean, x, n_boot=1000, generator=torch.Generator().manual_seed(0))
    assert again == (est, low, high)
    # Rows are resampled jointly: paired arrays (numpy too) stay paired, so this statistic never varies.
    a = np.arange(50.0)
    assert metrics.bootstrap_ci(lambda u, v: float(np.all(u == v.numpy())), a, torch.tensor(a),
                                n_boot=20) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="first dimension"):
        metrics.bootstrap_ci(torch.mean, x, x[:10])


# ----------------------------------------------------------------------------- CAS


@pytest.fixture(scope="module")
def mnist_slice():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_OFFLINE", "1")
        train, test = load_mnist("train", limit=2000), load_mnist("test")
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:1000]  # test set is ordered
    return train, test.x[pick], test.y[pick]


def test_classification_accuracy_score_real_and_shuffled_labels(mnist_slice):
    train, test_x, test_y = mnist_slice
    cas = metrics.classification_accuracy_score(train.x, train.y, test_x, test_y, steps=150, device="cpu")
    assert cas > 0.8
    shuffled = train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
    chance = metrics.classification_accuracy_score(train.x, shuffled, test_x, test_y, steps=150, device="cpu")
    assert chance < 0.3


def test_train_classifier_is_deterministic_and_leaves_global_rng_alone(mnist_slice):
    train, test_x, test_y = mnist_slice
    state = torch.random.get_rng_state()
    a, b = (metrics.train_classifier(train.x[:256], train.y[:256], steps=3, device="cpu", seed=3) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = metrics.train_classifier(train.x[:256], train.y[:256], steps=3, device="cpu", seed=4)
    assert not torch.equal(a[0].weight, c[0].weight)
    # accuracy() agrees with a direct argmax over all images at once.
    with torch.no_grad():
        direct = (a(test_x).argmax(1) == test_y).double().mean().item()
    assert metrics.accuracy(a, test_x, test_y, batch_size=300) == pytest.approx(direct)
    with pytest.raises(ValueError, match="integer labels"):
        metrics.train_classifier(train.x[:10], train.y[:10].float(), steps=1)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        metrics.train_classifier(train.x[:10].flatten(1), train.y[:10], steps=1)
