"""course_lib.diffusion against closed forms, Gaussian conditioning, diffusers, and oracle noise predictors.

The oracle tests are the end-to-end check of the samplers: for data whose distribution is known
(a point, a 1-D Gaussian, two points) the exact noise prediction E[eps | x_t] has a formula, and a
correct sampler driven by it must give back the data distribution.
"""
import inspect
import math

import pytest
import torch
from torch import nn

from course_lib.diffusion import (
    NoiseSchedule, SamplerSettings, ddim_sample, ddim_sigma, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step,
    diffusion_loss, guided_eps,
)
from course_lib.unet import UNet, UNetConfig


def gen(seed):
    return torch.Generator().manual_seed(seed)


def coefs(schedule, t, x):
    """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) per example of x, t: (B,)."""
    ab = schedule.alpha_bars[t.cpu()].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return ab.sqrt(), (1 - ab).sqrt()


class GaussianOracle(nn.Module):
    """Exact E[eps | x_t] for data ~ N(m, s^2) per coordinate: x_t = a x_0 + b eps gives
    E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - E x_t) = b (x_t - a m) / (a^2 s^2 + b^2)."""

    def __init__(self, schedule, m, s):
        super().__init__()
        self.schedule, self.m, self.s = schedule, m, s

    def forward(self, x, t, labels=None):
        a, b = coefs(self.schedule, t, x)
        return b * (x - a * self.m) / (a**2 * self.s**2 + b**2)


class PointsOracle(nn.Module):
    """Exact E[eps | x_t] for data = point c_k with probability p_k (1-D); with labels, class k is the
    point c_k alone and the null label (= number of points) is the whole mixture."""

    def __init__(self, schedule, points, probs):
        super().__init__()
        self.schedule = schedule
        self.points = torch.tensor(points, dtype=torch.float64)
        self.log_p = torch.tensor(probs, dtype=torch.float64).log()
        self.null_label = len(points)

    def forward(self, x, t, labels=None):
        a, b = (c.double() for c in coefs(self.schedule, t, x))  # (B, 1)
        xd = x.double()  # (B, 1)
        # posterior over the points: w_k ∝ p_k N(x_t; a c_k, b^2)
        logits = self.log_p - (xd - a * self.points) ** 2 / (2 * b**2)  # (B, K)
        if labels is not None:
            one = nn.functional.one_hot(labels.clamp(max=len(self.points) - 1), len(self.points)).bool()
            cond = torch.where(one, 0.0, -math.inf).double()
            logits = torch.where((labels < self.null_label)[:, None], cond, logits)
        x0 = (torch.softmax(logits, dim=1) * self.points).sum(1, keepdim=True)  # E[x_0 | x_t], (B, 1)
        return ((xd - a * x0) / b).to(x.dtype)


# ---------------------------------------------------------------------------- schedules


def test_linear_schedule_endpoints_and_scaling():
    s = NoiseSchedule.linear(1000)
    assert math.isclose(s.betas[0].item(), 1e-4) and math.isclose(s.betas[-1].item(), 0.02)
    assert torch.allclose(s.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    short = NoiseSchedule.linear(250)  # scaled by 1000 / T
    assert math.isclose(short.betas[0].item(), 4e-4) and math.isclose(short.betas[-1].item(), 0.08)
    assert s.alpha_bars[-1] < 1e-4 and short.alpha_bars[-1] < 1e-4  # both end at (nearly) pure noise
    assert torch.allclose(s.alpha_bars, torch.cumprod(1 - s.betas, 0))


def test_cosine_schedule_follows_its_alpha_bar_formula_and_clip():
    T, off = 1000, 0.008
    s = NoiseSchedule.cosine(T)

    def f(u):
        return math.cos((u + off) / (1 + off) * math.pi / 2) ** 2

    for t in [0, 1, 10, 250, 500, 900, 990, T - 2]:
        assert math.isclose(s.alpha_bars[t].item(), f((t + 1) / T) / f(0), rel_tol=1e-9), t
    assert s.betas.max().item() == pytest.approx(0.999)  # the clip bites at the last step
    assert s.betas[-1].item() == pytest.approx(0.999)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_snr_is_strictly_decreasing(name):
    s = NoiseSchedule.make(name, 1000)
    snr = s.snr()
    assert (snr.diff() < 0).all()
    assert snr[0] > 1e3 and snr[-1] < 1e-4
    assert torch.allclose(s.snr(torch.tensor([3, 700])), snr[[3, 700]])
    assert torch.allclose(snr, s.alpha_bars / (1 - s.alpha_bars))


def test_schedule_input_errors():
    with pytest.raises(ValueError, match="linear' or 'cosine"):
        NoiseSchedule.make("quadratic")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        NoiseSchedule.linear(100).q_sample(torch.zeros(2, 3), torch.tensor([0, 100]), torch.zeros(2, 3))


# ---------------------------------------------------------------------------- forward process and posterior


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_equals_iterated_one_step_kernel(name):
    s = NoiseSchedule.make(name, 1000)
    # q(x_t | x_0) = N(m_t x_0, v_t) by composing x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t step by step
    m, v = 1.0, 0.0
    for t in range(s.T):
        m, v = math.sqrt(1 - s.betas[t].item()) * m, (1 - s.betas[t].item()) * v + s.betas[t].item()
        if t in (0, 1, 99, 500, 999):
            x0 = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
            mean = s.q_sample(x0, t, torch.zeros_like(x0))  # noise 0 -> the mean
            sd = s.q_sample(torch.zeros_like(x0), t, torch.ones_like(x0))  # x0 0, noise 1 -> the std
            assert torch.allclose(mean, m * x0, rtol=1e-10), t
            assert torch.allclose(sd, torch.full_like(x0, math.sqrt(v)), rtol=1e-10), t


def test_closed_form_matches_monte_carlo_chain():
    s = NoiseSchedule.linear(100)
    n = 40_000
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64).repeat(n // 2)  # (n,)
    g = gen(0)
    x = x0.clone()
    for t in range(s.T):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if t in (9, 49, 99):
            direct = s.q_sample(x0[:, None], t, torch.randn(n, 1, generator=g, dtype=torch.float64))[:, 0]
            for start in (0, 1):  # each starting point separately
                a, b = x[start::2], direct[start::2]
                se = math.sqrt(2 / (n // 2)) * b.std().item()
                assert abs(a.mean().item() - b.mean().item()) < 4 * se, t
                assert abs(a.var().item() / b.var().item() - 1) < 0.05, t


def test_posterior_equals_gaussian_conditioning_of_the_joint():
    s = NoiseSchedule.cosine(200)
    x0 = torch.tensor([[0.7], [-1.2]], dtype=torch.float64)
    x_t = torch.tensor([[0.1], [2.0]], dtype=torch.float64)
    for t in (0, 1, 5, 100, 199):
        ab_prev = s.alpha_bars[t - 1].item() if t > 0 else 1.0
        alpha = s.alphas[t].item()
        # given x_0: x_{t-1} = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev) e1,  x_t = sqrt(alpha) x_{t-1} + sqrt(1 - alpha) e2
        L = torch.tensor([[math.sqrt(1 - ab_prev), 0.0],
                          [math.sqrt(alpha * (1 - ab_prev)), math.sqrt(1 - alpha)]], dtype=torch.float64)
        cov = L @ L.T  # joint covariance of (x_{t-1}, x_t)
        mu = torch.tensor([math.sqrt(ab_prev), math.sqrt(ab_prev * alpha)], dtype=torch.float64)  # times x_0
        gain = cov[0, 1] / cov[1, 1]
        ref_mean = mu[0] * x0 + gain * (x_t - mu[1] * x0)
        ref_var = cov[0, 0] - gain * cov[1, 0]
        mean, var = s.posterior_mean_variance(x0, x_t, torch.tensor([t, t]))
        assert torch.allclose(mean, ref_mean, atol=1e-10), t
        assert torch.allclose(var, ref_var.expand(2, 1), atol=1e-12), t
        mean_int, var_int = s.posterior_mean_variance(x0, x_t, t)  # an int t gives the same
        assert torch.allclose(mean_int, mean) and math.isclose(var_int, ref_var.item(), abs_tol=1e-12)


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.linear(1000)
    g = gen(3)
    x0, eps = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 300, 700, 999])
    x_t = s.q_sample(x0, t, eps)
    assert torch.allclose(s.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-4)
    x0_back = s.predict_x0_from_eps(x_t, t, eps)
    assert torch.allclose(x0_back[:4], x0[:4], atol=1e-4)
    assert torch.allclose(x0_back[4], x0[4], atol=1e-1)  # at t = 999, 1 / sqrt(alpha_bar) ~ 160 amplifies round-off


# ---------------------------------------------------------------------------- diffusers parity

BETA_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def toy_eps_model(x, t, labels=None):
    """A fixed nonlinear 'network' that depends on x and t, for parity tests."""
    return 0.8 * torch.tanh(x) + 0.3 * torch.sin(t.float() / 100)[:, None, None, None]


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 100])
def test_add_noise_matches_diffusers(name, T):
    """For T != 1000 our linear schedule rescales beta (diffusers' "linear" does not): diffusers gets our betas."""
    import diffusers
    s = NoiseSchedule.make(name, T)
    own_betas = name == "linear" and T != 1000
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=BETA_NAMES[name],
                                  trained_betas=s.betas.tolist() if own_betas else None)
    assert torch.allclose(ref.betas.double(), s.betas, atol=1e-6)
    g = gen(0)
    x0, noise = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, T // 4, 4 * T // 5, T - 1])
    assert torch.allclose(s.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=1e-5)


def with_our_tables(scheduler, schedule):
    """diffusers keeps its tables in float32 (and forms beta_t as 1 - alpha_bar_t / alpha_bar_{t-1}, which
    loses digits near t = 0). The tables themselves are compared in test_add_noise_matches_diffusers; for the
    update formulas, give diffusers our float64 tables so that the comparison can be tight."""
    scheduler.betas, scheduler.alphas, scheduler.alphas_cumprod = schedule.betas, schedule.alphas, schedule.alpha_bars
    scheduler.one = scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


@pytest.mark.parametrize("variance, ref_type", [("posterior", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_and_sampler_match_diffusers(variance, ref_type, clip):
    import diffusers
    s = NoiseSchedule.linear(1000)
    ref = with_our_tables(diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=clip,
                                                  variance_type=ref_type, prediction_type="epsilon"), s)
    g = gen(1)
    x, eps = (torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    eps = 2 * eps  # large enough that clipping x0_hat to [-1, 1] changes something
    for t in (999, 500, 3, 1, 0):  # one step with the same noise
        out = ref.step(eps, t, x, generator=gen(t))
        noise = torch.randn(x.shape, generator=gen(t), dtype=torch.float64)
        x_prev, x0_hat = ddpm_step(s, eps, x, t, variance=variance, noise=noise, clip_x0=clip)
        assert torch.allclose(x0_hat, out.pred_original_sample, atol=1e-10), t
        assert torch.allclose(x_prev, out.prev_sample, atol=1e-10), t
    # the whole sampler: same initial noise and per-step noise from one generator
    shape = (3, 1, 4, 4)
    g_ref = gen(7)
    x_ref = torch.randn(shape, generator=g_ref)
    for t in range(999, -1, -1):
        x_ref = ref.step(toy_eps_model(x_ref, torch.full((3,), t)), t, x_ref, generator=g_ref).prev_sample
    x_ours = ddpm_sample(toy_eps_model, s, shape, variance=variance, clip_x0=clip, generator=gen(7), progress=False)
    assert torch.allclose(x_ours, x_ref, atol=1e-5)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_sampler_matches_diffusers(spacing, eta):
    import diffusers
    s = NoiseSchedule.cosine(1000)
    ref = with_our_tables(diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                                  clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing,
                                                  prediction_type="epsilon"), s)
    ref.set_timesteps(50)
    timesteps = ref.timesteps.tolist()
    # 50 steps divide T = 1000 evenly: diffusers' DDIM steps from t to t - T // steps, which is the next timestep
    # of the list only when the spacing is even (30 steps would give gaps of 33 and 34, a difference by design)
    if spacing == "trailing":  # our default spacing is diffusers' "trailing"
        assert timesteps == ddim_timesteps(1000, 50)
        assert timesteps[0] == 999 and timesteps[-1] == 19
    shape = (3, 1, 4, 4)
    g_ref = gen(11)
    x_ref = torch.randn(shape, generator=g_ref)
    for t in timesteps:
        noise = torch.randn(shape, generator=g_ref)  # our sampler draws one noise tensor per step
        eps = toy_eps_model(x_ref, torch.full((3,), t))
        x_ref = ref.step(eps, t, x_ref, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
    x_ours = ddim_sample(toy_eps_model, s, shape, eta=eta, timesteps=timesteps, generator=gen(11), progress=False)
    assert torch.allclose(x_ours, x_ref, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_with_clipping_matches_diffusers_clipped_model_output(eta):
    """clip_x0=True re-derives eps from the clamped x0_hat: diffusers' use_clipped_model_output=True."""
    import diffusers
    s = NoiseSchedule.linear(1000)
    ref = with_our_tables(diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                                                  set_alpha_to_one=True, timestep_spacing="trailing",
                                                  prediction_type="epsilon"), s)
    ref.set_timesteps(20)
    g = gen(2)
    x, eps = (torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    eps = 2 * eps  # large enough that clipping x0_hat to [-1, 1] changes something
    for t, t_prev in [(999, 949), (499, 449), (49, -1)]:
        noise = torch.randn(x.shape, generator=gen(t), dtype=torch.float64)
        out = ref.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise if eta > 0 else None)
        x_prev, x0_hat = ddim_step(s, eps, x, t, t_prev=t_prev, eta=eta, noise=noise, clip_x0=True)
        assert not torch.allclose(x0_hat, s.predict_x0_from_eps(x, t, eps))  # the clamp bites
        assert torch.allclose(x0_hat, out.pred_original_sample, atol=1e-10), t
        assert torch.allclose(x_prev, out.prev_sample, atol=1e-10), t


def test_clipped_ddim_step_stays_on_the_line_through_x0_hat():
    """After a deterministic step, x_t' and x_t imply the same noise for the (clamped) x0_hat.

    The update x_t' = sqrt(ab') x0_hat + sqrt(1 - ab') eps is only self-consistent when eps is the
    noise that x0_hat and x_t imply; clamping x0_hat but keeping the network's eps breaks that, and
    the error compounds over many steps."""
    s = NoiseSchedule.linear(1000)
    g = gen(3)
    x = torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = 3 * torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64)  # x0_hat far outside [-1, 1]
    for t, t_prev in [(999, 899), (500, 400), (100, 50)]:
        x_prev, x0_hat = ddim_step(s, eps, x, t, t_prev=t_prev, eta=0.0, clip_x0=True)
        assert x0_hat.abs().max() <= 1
        implied_before = s.predict_eps_from_x0(x, t, x0_hat)
        implied_after = s.predict_eps_from_x0(x_prev, t_prev, x0_hat)
        assert torch.allclose(implied_after, implied_before, atol=1e-10), t
        # ... and a deterministic step from x_t' with that noise predicts the same x0_hat again
        assert torch.allclose(s.predict_x0_from_eps(x_prev, t_prev, implied_after), x0_hat, atol=1e-10)


# ---------------------------------------------------------------------------- DDIM versus DDPM


def test_ddim_timesteps_spacing():
    assert ddim_timesteps(1000, 50) == list(range(999, 18, -20))
    assert ddim_timesteps(100, 100) == list(range(99, -1, -1))
    assert ddim_timesteps(10, 3) == [9, 6, 2]
    with pytest.raises(ValueError, match="steps <= T"):
        ddim_timesteps(100, 101)


def test_ddim_with_eta_one_over_all_steps_is_ddpm_with_posterior_variance():
    s = NoiseSchedule.linear(100)
    for t in range(1, s.T):
        assert math.isclose(ddim_sigma(s, t, t - 1, eta=1.0) ** 2, s.posterior_variance[t].item(), rel_tol=1e-9)
    assert ddim_sigma(s, 0, -1, eta=1.0) == 0.0
    g = gen(2)
    x, eps, noise = (torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (99, 50, 1, 0):
        ddim_prev, _ = ddim_step(s, eps, x, t, t_prev=t - 1, eta=1.0, noise=noise)
        ddpm_prev, _ = ddpm_step(s, eps, x, t, variance="posterior", noise=noise)
        assert torch.allclose(ddim_prev, ddpm_prev, atol=1e-10), t
    model = GaussianOracle(s, 0.3, 0.5)
    a = ddim_sample(model, s, (64, 1), steps=100, eta=1.0, generator=gen(5), progress=False)
    b = ddpm_sample(model, s, (64, 1), variance="posterior", generator=gen(5), progress=False)
    assert torch.allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------------------- guidance and the loss


def test_guided_eps_scales():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8, groups=4, attention_heads=2, num_classes=3)).eval()
    g = gen(0)
    x, t, y = torch.randn(2, 1, 8, 8, generator=g), torch.tensor([10, 900]), torch.tensor([0, 2])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.tensor([3, 3]))
        assert torch.allclose(guided_eps(model, x, t, y, scale=1.0), cond, atol=1e-5)
        assert torch.allclose(guided_eps(model, x, t, y, scale=0.0), uncond, atol=1e-5)
        assert torch.allclose(guided_eps(model, x, t, y, scale=2.5), uncond + 2.5 * (cond - uncond), atol=1e-5)
        assert torch.allclose(guided_eps(model, x, t, None, scale=2.5), uncond, atol=1e-5)
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        guided_eps(model, x, t, y, scale=2.5)
    assert calls == [4]  # one forward pass on the doubled batch
    with pytest.raises(ValueError, match="null label"):
        guided_eps(toy_eps_model, x, t, y, scale=2.0)


class Recorder(nn.Module):
    """Predicts eps = 0 and remembers the t and labels it was called with."""

    null_label = 10

    def forward(self, x, t, labels=None):
        self.t, self.labels = t, labels
        return torch.zeros_like(x)


def test_diffusion_loss_with_oracle_zero_and_trivial_predictor_one():
    s = NoiseSchedule.linear(100)
    c = torch.full((4000, 1), 0.7)
    oracle = PointsOracle(s, [0.7], [1.0])  # data = one point: eps is exactly predictable
    assert diffusion_loss(oracle, s, c, generator=gen(0)).item() < 1e-8
    rec = Recorder()
    loss = diffusion_loss(rec, s, c, generator=gen(0)).item()  # E[eps^2] = 1
    assert abs(loss - 1) < 4 * math.sqrt(2 / 4000)
    assert rec.t.min() >= 0 and rec.t.max() < 100 and rec.t.unique().numel() == 100


def test_label_dropout_rate():
    s = NoiseSchedule.linear(100)
    x = torch.zeros(20_000, 1)
    labels = torch.randint(0, 10, (20_000,), generator=gen(1))
    rec = Recorder()
    diffusion_loss(rec, s, x, labels, p_uncond=0.0, generator=gen(2))
    assert torch.equal(rec.labels, labels)
    diffusion_loss(rec, s, x, labels, p_uncond=0.2, generator=gen(2))
    dropped = rec.labels == 10
    assert abs(dropped.float().mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    assert torch.equal(rec.labels[~dropped], labels[~dropped])
    diffusion_loss(rec, s, x, labels, p_uncond=1.0, generator=gen(2))
    assert (rec.labels == 10).all()


# ---------------------------------------------------------------------------- samplers with oracle models


@pytest.mark.parametrize("sampler", ["ddpm-posterior", "ddpm-beta", "ddim-0", "ddim-1"])
def test_samplers_return_a_single_data_point_exactly(sampler):
    s = NoiseSchedule.cosine(100)
    oracle = PointsOracle(s, [0.7], [1.0])
    kind, opt = sampler.split("-")
    if kind == "ddpm":
        x = ddpm_sample(oracle, s, (500, 1), variance=opt, generator=gen(0), progress=False)
    else:
        x = ddim_sample(oracle, s, (500, 1), steps=20, eta=float(opt), generator=gen(0), progress=False)
    assert torch.allclose(x, torch.full_like(x, 0.7), atol=1e-4)


def affine_sampler_map(schedule, ts, m, s, variance=None, eta=0.0):
    """Mean and variance of the sampler's output for data N(m, s^2) with the oracle, derived by hand:
    each step is x' = A x + B + sigma z because E[eps | x] is affine in x."""
    mean, var = 0.0, 1.0  # x_{T-1} ~ N(0, 1)
    ab = schedule.alpha_bars.tolist()
    for t, tp in zip(ts, ts[1:] + [-1]):
        a, b = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        abp = ab[tp] if tp >= 0 else 1.0
        k = b / (a * a * s * s + b * b)  # eps_hat = k (x - a m)
        x0_slope, x0_icpt = (1 - b * k) / a, b * k * m  # x0_hat = x0_slope x + x0_icpt
        if variance is None:  # DDIM
            sig = eta * math.sqrt((1 - abp) / (1 - ab[t]) * (1 - ab[t] / abp))
            d = math.sqrt(1 - abp - sig**2)
            A, B = math.sqrt(abp) * x0_slope + d * k, math.sqrt(abp) * x0_icpt - d * k * a * m
        else:  # DDPM: posterior mean with x0_hat, variance beta_tilde or beta, none at t = 0
            beta = 1 - ab[t] / abp
            c0, ct = math.sqrt(abp) * beta / (1 - ab[t]), math.sqrt(1 - beta) * (1 - abp) / (1 - ab[t])
            A, B = c0 * x0_slope + ct, c0 * x0_icpt
            sig = 0.0 if tp < 0 else math.sqrt(beta * (1 - abp) / (1 - ab[t]) if variance == "posterior" else beta)
        mean, var = A * mean + B, A * A * var + sig**2
    return mean, var


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_with_oracle_recovers_a_gaussian(name, variance):
    s = NoiseSchedule.make(name, 200)
    m, sd, n = 0.5, 0.3, 20_000
    x = ddpm_sample(GaussianOracle(s, m, sd), s, (n, 1), variance=variance, generator=gen(0), progress=False)
    exp_mean, exp_var = affine_sampler_map(s, list(range(199, -1, -1)), m, sd, variance=variance)
    # the sampler matches its exact output law (Monte Carlo tolerance) ...
    assert abs(x.mean().item() - exp_mean) < 4 * math.sqrt(exp_var / n)
    assert abs(x.var().item() / exp_var - 1) < 4 * math.sqrt(2 / n)
    # ... and that law is close to the data distribution N(m, sd^2)
    assert abs(exp_mean - m) < 0.005 and abs(math.sqrt(exp_var) / sd - 1) < 0.07
    assert abs(x.mean().item() - m) < 0.01 and abs(x.std().item() / sd - 1) < 0.08


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_with_oracle_is_the_expected_affine_map(eta):
    s = NoiseSchedule.cosine(1000)
    m, sd, n = -0.2, 0.4, 20_000
    x = ddim_sample(GaussianOracle(s, m, sd), s, (n, 1), steps=50, eta=eta, generator=gen(1), progress=False)
    exp_mean, exp_var = affine_sampler_map(s, ddim_timesteps(1000, 50), m, sd, eta=eta)
    if eta == 0:  # deterministic: output = A x_{T-1} + B exactly, with x_{T-1} the generator's first draw
        x_start = torch.randn((n, 1), generator=gen(1))
        slope = math.sqrt(exp_var)  # var started at 1, so A_total = sqrt(var)
        assert torch.allclose(x, slope * x_start + exp_mean, atol=1e-4)
    assert abs(x.mean().item() - exp_mean) < 4 * math.sqrt(exp_var / n)
    assert abs(x.var().item() / exp_var - 1) < 4 * math.sqrt(2 / n)
    assert abs(exp_mean - m) < 0.005 and abs(math.sqrt(exp_var) / sd - 1) < 0.1  # 50 steps: a little too narrow


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_with_oracle_keep_the_mode_weights_of_two_points(sampler):
    s = NoiseSchedule.cosine(100)
    oracle = PointsOracle(s, [-1.0, 1.0], [0.25, 0.75])
    n = 4000
    if sampler == "ddpm":
        x = ddpm_sample(oracle, s, (n, 1), generator=gen(3), progress=False)
    else:
        x = ddim_sample(oracle, s, (n, 1), steps=25, generator=gen(3), progress=False)
    assert ((x - 1).abs() < 0.01).logical_or((x + 1).abs() < 0.01).all()
    frac = (x > 0).float().mean().item()
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guided_sampling_with_oracle_lands_on_the_requested_class(scale):
    s = NoiseSchedule.cosine(100)
    oracle = PointsOracle(s, [-1.0, 1.0], [0.5, 0.5])
    labels = torch.tensor([0, 1] * 100)
    x = ddim_sample(oracle, s, (200, 1), steps=20, labels=labels, guidance_scale=scale, generator=gen(4),
                    progress=False)
    assert torch.allclose(x[:, 0], 2.0 * labels - 1, atol=0.01)
    uncond = ddpm_sample(oracle, s, (400, 1), labels=torch.zeros(400, dtype=torch.long), guidance_scale=0.0,
                         generator=gen(4), progress=False)  # scale 0: the null label, i.e. the mixture
    assert abs((uncond > 0).float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 400)


# ---------------------------------------------------------------------------- sampler plumbing


def test_trajectory_inpainting_and_reproducibility():
    s = NoiseSchedule.linear(50)
    oracle = GaussianOracle(s, 0.0, 1.0)
    x, traj = ddpm_sample(oracle, s, (2, 1, 4, 4), generator=gen(0), progress=False, return_trajectory=True,
                          every=10)
    assert traj.steps == [49, 39, 29, 19, 9, 0]
    assert traj.x.shape == traj.x0.shape == (6, 2, 1, 4, 4)
    assert torch.equal(traj.x[-1], x)
    assert torch.equal(x, ddpm_sample(oracle, s, (2, 1, 4, 4), generator=gen(0), progress=False))
    known = torch.full((2, 1, 4, 4), 3.0)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1  # the left half is known
    filled = ddpm_sample(oracle, s, (2, 1, 4, 4), generator=gen(0), progress=False, known=known, mask=mask)
    assert torch.equal(filled[..., :2], known[..., :2])
    assert (filled[..., 2:] - 3).abs().min() > 0  # the rest was sampled
    with pytest.raises(ValueError, match="both known"):
        ddpm_sample(oracle, s, (2, 1, 4, 4), known=known, progress=False)
    with pytest.raises(ValueError, match="variance must be"):
        ddpm_sample(oracle, s, (2, 1, 4, 4), variance="large", progress=False)
    with pytest.raises(ValueError, match="decrease strictly"):
        ddim_sample(oracle, s, (2, 1, 4, 4), timesteps=[10, 20], progress=False)


def test_step_functions_share_their_leading_arguments():
    """Both steps are step(schedule, eps, x_t, t, *, ...): the same positional arguments, and noise and
    clip_x0 are keyword-only in both (so a noise tensor can never land on another argument)."""
    def params(fn, kind):
        return [p.name for p in inspect.signature(fn).parameters.values() if p.kind == kind]

    assert params(ddpm_step, inspect.Parameter.POSITIONAL_OR_KEYWORD) == ["schedule", "eps", "x_t", "t"]
    assert params(ddim_step, inspect.Parameter.POSITIONAL_OR_KEYWORD) == ["schedule", "eps", "x_t", "t"]
    for fn in (ddpm_step, ddim_step):
        assert {"noise", "clip_x0"} <= set(params(fn, inspect.Parameter.KEYWORD_ONLY))
    s = NoiseSchedule.linear(50)
    x, eps, noise = (torch.randn(2, 1, 4, 4, generator=gen(k)) for k in range(3))
    with pytest.raises(TypeError):
        ddpm_step(s, eps, x, 10, noise)  # noise by keyword only
    # eta = 1 from t to t - 1 is the DDPM step with the posterior variance, called the same way
    a, _ = ddim_step(s, eps, x, 10, t_prev=9, eta=1.0, noise=noise, clip_x0=True)
    b, _ = ddpm_step(s, eps, x, 10, noise=noise, clip_x0=True)
    assert torch.allclose(a, b, atol=1e-5)


def test_sampler_settings_are_shared_keywords():
    s, oracle = NoiseSchedule.linear(20), GaussianOracle(NoiseSchedule.linear(20), 0.0, 1.0)
    for fn in (ddpm_sample, ddim_sample):
        assert len(inspect.signature(fn).parameters) <= 7  # model, schedule, shape, its own few, **settings
    with pytest.raises(TypeError, match=r"ddpm_sample got unexpected keyword\(s\) \['steps'\].*variance"):
        ddpm_sample(oracle, s, (2, 1), steps=5, progress=False)  # steps are DDIM's
    with pytest.raises(TypeError, match="SamplerSettings fields labels, guidance_scale"):
        ddim_sample(oracle, s, (2, 1), guidance=2.0, progress=False)
    assert SamplerSettings().guidance_scale == 1.0 and SamplerSettings().every is None


def test_sampler_restores_training_mode_and_works_with_a_unet():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8, groups=4, attention_heads=2, num_classes=2, dropout=0.5)).train()
    s = NoiseSchedule.linear(50)
    a = ddim_sample(model, s, (2, 1, 8, 8), steps=5, labels=torch.tensor([0, 1]), guidance_scale=2.0,
                    generator=gen(0), progress=False)
    b = ddim_sample(model, s, (2, 1, 8, 8), steps=5, labels=torch.tensor([0, 1]), guidance_scale=2.0,
                    generator=gen(0), progress=False)
    assert model.training  # restored after sampling
    assert torch.equal(a, b)  # dropout was off while sampling, so the result is deterministic
    assert torch.isfinite(a).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast on CPU is an option for training
        loss = diffusion_loss(model, s, a, torch.tensor([0, 1]), p_uncond=0.5, generator=gen(1))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def _small_unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, attention_heads=2, num_classes=3))


@pytest.mark.parametrize("sampler, kwargs, draws_on_gpu", [
    ("ddim", dict(steps=5, eta=0.0), 1),      # x_{T-1} only: eta = 0 adds no noise
    ("ddim", dict(steps=5, eta=0.5), 1 + 4),  # no noise on the last step
    ("ddpm", dict(), 1 + 19),                 # T = 20 steps, no noise on the last one
])
def test_samplers_draw_noise_on_the_device_only_when_it_is_used(monkeypatch, sampler, kwargs, draws_on_gpu):
    """On the meta device (it holds no values: any read of one raises, so this also shows that the loop
    never waits for the device) a sampler draws only the noise it uses, on that device, and checks the
    labels once; on a CPU every step draws, so a seed keeps giving the samples it gave before."""
    import course_lib.diffusion as diffusion

    schedule = NoiseSchedule.linear(20)
    draws, checks = [], []
    real_randn = diffusion._randn
    monkeypatch.setattr(diffusion, "_randn",
                        lambda shape, g, device, *a: draws.append(device) or real_randn(shape, g, device, *a))
    sample = ddim_sample if sampler == "ddim" else ddpm_sample
    for device in ("meta", "cpu"):
        model = _small_unet().to(device)
        monkeypatch.setattr(model, "check_labels", lambda labels: checks.append(labels.device.type))
        draws.clear()
        sample(model, schedule, (2, 1, 8, 8), labels=torch.tensor([0, 1]), guidance_scale=2.0, progress=False,
               **kwargs)
        steps = kwargs.get("steps", 20)
        assert len(draws) == (draws_on_gpu if device == "meta" else 1 + steps)
        assert {torch.device(d).type for d in draws} == {device}
    assert checks.count("meta") == 1  # once per call, not at every step (CPU labels the model checks itself)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_skipping_unused_noise_changes_no_sample(monkeypatch, eta):
    """Within one call the noise a step does not use is never looked at, so skipping it (as on a GPU)
    gives the same samples as drawing it (as on a CPU)."""
    import course_lib.diffusion as diffusion

    model, schedule = _small_unet(), NoiseSchedule.linear(20)

    def run():
        return (ddim_sample(model, schedule, (2, 1, 8, 8), steps=5, eta=eta, generator=gen(3), progress=False),
                ddpm_sample(model, schedule, (2, 1, 8, 8), generator=gen(4), progress=False))

    every_step = run()
    monkeypatch.setattr(diffusion, "_draws_every_step", lambda device: False)
    only_used = run()
    assert all(torch.equal(a, b) for a, b in zip(every_step, only_used))
