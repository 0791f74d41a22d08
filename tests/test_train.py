import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib.precision import Precision
from course_lib.train import (EMA, History, accuracy, autocast, cosine_lr, cosine_schedule,
                              eval_mode, fit, load_checkpoint, save_checkpoint, train_loop)


def regression_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 3, generator=g)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    y = x @ w + 0.3
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False), w


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_fit_learns_a_linear_map_and_logs_history():
    torch.manual_seed(0)
    loader, w = regression_problem()
    model = nn.Linear(3, 1)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), mse, loader, steps=300,
                  log_every=10, progress=False)
    assert history.values("loss")[-1] < 1e-4 < history.values("loss")[0]
    assert history.steps("loss")[:3] == [0, 10, 20] and history.steps("loss")[-1] == 299
    assert torch.allclose(model.weight.data.T, w, atol=1e-2)


def test_fit_logs_extra_metrics():
    loader, _ = regression_problem()
    model = nn.Linear(3, 1)

    def loss_with_extra(m, batch):
        loss = mse(m, batch)
        return loss, {"rmse": loss.sqrt().item()}

    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), loss_with_extra, loader,
                  steps=20, log_every=5, progress=False)
    assert "rmse" in history
    assert history.last("rmse") == pytest.approx(history.last("loss") ** 0.5, rel=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    loader, _ = regression_problem()

    def run(steps, ckpt=None, seed=0):
        torch.manual_seed(seed)
        model = nn.Linear(3, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        hist = fit(model, opt, mse, loader, steps=steps, checkpoint=ckpt, checkpoint_every=25, progress=False)
        return model, hist

    straight, straight_hist = run(100)
    ckpt = tmp_path / "run.pt"
    run(50, ckpt)                    # "interrupted" after 50 steps
    assert load_checkpoint(ckpt)["step"] == 50
    resumed, resumed_hist = run(100, ckpt, seed=123)  # different init: must be overwritten by the checkpoint
    # 50 steps = 6.25 passes over 8 batches, so the resumed run sees batches in a different
    # order; the parameters and loss must still land where the straight run did, closely.
    assert resumed_hist.steps("loss")[0] == 0 and resumed_hist.steps("loss")[-1] == 99
    assert torch.allclose(resumed.weight, straight.weight, atol=5e-2)
    assert os.listdir(tmp_path) == ["run.pt"], "no temporary files are left behind"


class NotATensor:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_checkpoints_are_atomic_and_loaded_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=nn.Linear(2, 2).state_dict(), step=3)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, step=4)
    assert path.read_bytes() == before, "a failed save must leave the old checkpoint intact"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]
    monkeypatch.undo()

    torch.save({"obj": NotATensor()}, tmp_path / "pickle.pt")
    with pytest.raises(RuntimeError, match="Could not read checkpoint"):
        load_checkpoint(tmp_path / "pickle.pt")  # weights_only=True refuses arbitrary objects
    (tmp_path / "trunc.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(RuntimeError, match="delete the file"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_fit_stops_on_non_finite_loss():
    loader, _ = regression_problem()
    model = nn.Linear(3, 1)
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(model, torch.optim.SGD(model.parameters(), lr=1e6), mse, loader, steps=200, progress=False)


def test_fit_reads_the_loss_only_at_logging_steps(host_syncs):
    """Every read of a tensor's value waits for the GPU: fit makes them at logging steps, not at every step."""
    loader, _ = regression_problem()

    def reads(steps):
        host_syncs.clear()
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        fit(model, opt, lambda m, b: (mse(m, b), {"half": mse(m, b).detach() / 2}), loader, steps=steps,
            log_every=1000, grad_clip=1.0, scheduler=sched, ema=EMA(model), progress=False)
        return list(host_syncs)

    few, many = reads(3), reads(40)  # each logs its first and its last step
    assert few, "the counter sees the reads of the last (logged) step"
    assert many == few, f"{len(many) - len(few)} more reads in 37 more steps: {many}"


def test_fit_takes_fp16_steps_through_a_grad_scaler(monkeypatch, tmp_path):
    """The fp16 path (older GPUs), run on the CPU: every step goes through the GradScaler, whose state
    is checkpointed, and the model still learns."""
    import course_lib.train as train

    monkeypatch.setattr(train, "precision_policy", lambda device, amp: Precision("cpu", torch.float16))
    calls = {"scale": 0, "unscale_": 0, "step": 0, "update": 0}
    for name in calls:
        original = getattr(torch.amp.GradScaler, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += self.is_enabled()
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.amp.GradScaler, name, spy)
    dtypes = set()

    def loss_fn(model, batch):
        x, y = batch
        out = model(x)
        dtypes.add(out.dtype)
        return nn.functional.mse_loss(out.float(), y)

    torch.manual_seed(0)
    loader, w = regression_problem()
    model = nn.Linear(3, 1)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, loader, steps=200, grad_clip=10.0,
                  checkpoint=tmp_path / "run.pt", progress=False)
    assert dtypes == {torch.float16} and model.weight.dtype == torch.float32
    assert calls == {"scale": 200, "unscale_": 200, "step": 200, "update": 200}
    assert history.values("loss")[-1] < 1e-2 * history.values("loss")[0]
    assert torch.allclose(model.weight.data.T, w, atol=2e-2)
    assert load_checkpoint(tmp_path / "run.pt")["scaler"]["scale"] > 0


def test_autocast_is_bf16_on_cpu_only_when_asked():
    w = torch.randn(8, 8)
    with autocast(torch.device("cpu")):
        assert (w @ w).dtype == torch.float32
    with autocast(torch.device("cpu"), enabled=True):
        assert (w @ w).dtype == torch.bfloat16


def test_history_round_trips_through_state_dict():
    h = History()
    h.log(0, loss=2.0, acc=0.1)
    h.log(5, loss=1.0)
    h2 = History()
    h2.load_state_dict(h.state_dict())
    assert h2.records == h.records and h2.last("loss") == 1.0 and h2.steps("acc") == [0]


def test_cosine_lr_schedule_shape():
    values = [cosine_lr(s, total=100, warmup=10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_eval_mode_switches_off_dropout_and_restores_the_mode():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    x = torch.ones(8, 4)
    for start_in_training in (True, False):
        net.train(start_in_training)
        with eval_mode(net):
            assert not net.training and torch.equal(net(x), net(x))  # deterministic: dropout is off
        assert net.training == start_in_training
    with eval_mode(torch.sin) as f:  # a plain function passes through
        assert f is torch.sin
    net.train()
    try:
        with eval_mode(net):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert net.training, "the mode must be restored when the block raises"


def test_accuracy_matches_a_direct_count_across_batches_in_eval_mode():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.9))
    x, labels = torch.randn(23, 5, generator=g), torch.randint(0, 3, (23,), generator=g)
    net.eval()
    with torch.no_grad():
        expected = int((net(x).argmax(1) == labels).sum()) / len(labels)  # dropout off
    net.train()
    for batch_size in (1, 7, 23, 100):  # batch boundaries, a batch larger than the set
        assert accuracy(net, x, labels, batch_size=batch_size) == pytest.approx(expected, abs=1e-12)
    assert net.training, "accuracy must restore the model's mode"
    assert accuracy(net, x, (labels + 1) % 3) < 1.0 - expected + 1e-9  # wrong labels score lower
    with pytest.raises(ValueError, match=r"expected 23 integer labels"):
        accuracy(net, x, labels[:5])


def test_parameter_and_flop_counts_match_a_hand_count():
    from course_lib.train import count_flops, count_parameters

    net = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(4, 5, requires_grad=True)
    # forward 2 B (5*3 + 3*2) FLOPs; backward twice that (gradients of the inputs and of the weights)
    assert count_flops(lambda: net(x).sum().backward()) == 3 * 2 * 4 * (5 * 3 + 3 * 2)
    assert count_parameters(net) == (5 * 3 + 3) + (3 * 2 + 2)
    net[0].requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 3 * 2 + 2
    tied = nn.Sequential(net[2], net[2])  # the same Linear twice: its tensors count once
    assert count_parameters(tied) == 3 * 2 + 2


def test_ema_follows_its_formula_with_warm_up_and_copies_buffers():
    from course_lib.train import EMA

    model = nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    expected = 0.0
    for n, w in enumerate([1.0, 2.0, 4.0, 4.0, 4.0]):
        with torch.no_grad():
            model.weight.fill_(w)
            model.num_batches_tracked.fill_(n + 7)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * w
        assert ema.shadow["weight"].item() == pytest.approx(expected)
        assert ema.shadow["num_batches_tracked"].item() == n + 7  # integer buffers are copied
    copy = ema.model_copy(model)
    assert copy.weight.item() == pytest.approx(expected) and model.weight.item() == 4.0 and not copy.training
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_fit_updates_the_ema_every_step_and_checkpoints_it(tmp_path):
    from course_lib.train import EMA

    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    data = [(torch.randn(8, 2), torch.randn(8, 1)) for _ in range(3)]
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), data,
        steps=5, progress=False, ema=ema, checkpoint=tmp_path / "c.pt")
    assert ema.updates == 5
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["ema"]["updates"] == 5 and torch.equal(state["ema"]["shadow"]["weight"], ema.shadow["weight"])


def test_train_loop_needs_a_budget_and_a_known_nonfinite_policy():
    loader, _ = regression_problem()
    with pytest.raises(ValueError, match="budget"):
        train_loop(lambda batches, step, progress: {}, loader)
    with pytest.raises(ValueError, match="negative"):
        train_loop(lambda batches, step, progress: {}, loader, steps=-1)
    for budget in (dict(steps=0), dict(seconds=0.0), dict(steps=0, seconds=5.0)):  # nothing to do: no step runs
        assert train_loop(lambda batches, step, progress: 1 / 0, loader, progress=False, **budget).step == 0
    with pytest.raises(ValueError, match="on_nonfinite"):
        train_loop(lambda batches, step, progress: {}, loader, steps=1, on_nonfinite="ignore")


def test_fit_with_a_time_budget_stops_on_time_and_reports_steps_and_seconds(monkeypatch):
    """A seconds budget ends the run when the training clock reaches it; a fake clock makes each step last 1 s."""
    import course_lib.train as train

    now = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: now[0])

    def one_second_step(model, batch):
        now[0] += 1.0
        return mse(model, batch)

    loader, _ = regression_problem()
    model = nn.Linear(3, 1)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), one_second_step, loader, seconds=7.0,
                  progress=False)
    assert history.step == 7 and history.seconds == 7.0
    assert history.steps("loss") == [0, 6], "the first and the last step are logged"


def test_fit_schedule_follows_the_share_of_the_budget():
    loader, _ = regression_problem()
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, opt, lambda m, b: (mse(m, b), {"lr": opt.param_groups[0]["lr"]}), loader, steps=20,
                  log_every=1, schedule=cosine_schedule(warmup=0.1, min_ratio=0.0), progress=False)
    seen = history.values("lr")  # the rate each step used
    assert seen[0] == pytest.approx(0.1 * 1 / 100)  # warm-up: step 0 of 1000 ticks, 100 of them warm-up
    assert max(seen) == pytest.approx(0.1 * cosine_lr(100, 1000, 100, 0.0))  # at 10% of the budget: the peak
    assert seen[-1] == pytest.approx(0.1 * cosine_lr(950, 1000, 100, 0.0))  # step 19 of 20: nearly decayed


def test_on_nonfinite_stop_marks_the_run_diverged_instead_of_raising():
    loader, _ = regression_problem()
    model = nn.Linear(3, 1)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=1e6), mse, loader, steps=200, log_every=1,
                  on_nonfinite="stop", progress=False)
    assert history.diverged and history.step < 200


def test_callbacks_run_every_n_steps_or_at_points_of_the_budget_off_the_clock():
    loader, _ = regression_problem()
    model = nn.Linear(3, 1)
    every, points = [], []
    fit(model, torch.optim.SGD(model.parameters(), lr=0.01), mse, loader, steps=12, progress=False,
        callback=every.append, callback_every=5)
    assert every == [5, 10]
    fit(model, torch.optim.SGD(model.parameters(), lr=0.01), mse, loader, steps=12, progress=False,
        callback=points.append, callback_points=3)
    assert points == [4, 8, 12]


def test_train_loop_runs_a_step_function_that_draws_several_batches():
    """A GAN-like step (two batches per step) through the one loop: batches arrive on the device in order."""
    data = [torch.full((2,), float(i)) for i in range(5)]
    drawn = []

    def step_fn(batches, step, progress):
        drawn.extend(float(next(batches)[0]) for _ in range(2))
        return {"loss": torch.tensor(float(step))}

    history = train_loop(step_fn, data, steps=4, log_every=1, progress=False)
    assert drawn == [0, 1, 2, 3, 4, 0, 1, 2]  # the data is cycled
    assert history.values("loss") == [0, 1, 2, 3] and history.step == 4
