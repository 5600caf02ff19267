"""EMA of the classifier's weights (hemwsl.engines.handlers.EMAHandler) and the best/last checkpoint helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler

from hemwsl.engines.classifier import CHECKPOINTS, checkpoint_file, report_name, summarize_cv
from hemwsl.engines.handlers import EMAHandler, PredictionCollector, unwrap_network
from hemwsl.errors import HemwslInputError


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 1))


def _data(n: int = 24, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, :1] + 0.3 * torch.randn(n, 1, generator=g) > 0).float()
    return x, y


def _sgd_trainer(net, x, y, batch=8):
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(engine, i):
        net.train()
        opt.zero_grad()
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    return Engine(step)


def test_ema_update_equals_hand_formula():
    net = _net()
    x, y = _data()
    decay = 0.8
    ema = EMAHandler(net, decay=decay)
    trainer = _sgd_trainer(net, x, y)
    expected = {k: v.detach().clone() for k, v in net.named_parameters()}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _hand(engine):  # registered before the handler: both see the same post-step weights
        for k, p in net.named_parameters():
            expected[k] = decay * expected[k] + (1 - decay) * p.detach()

    ema.attach(trainer)
    trainer.run(range(3), max_epochs=2)  # 6 optimiser steps

    assert ema.num_updates == 6
    ema_params = dict(ema.ema_model.named_parameters())
    for k, p in net.named_parameters():
        torch.testing.assert_close(ema_params[k], expected[k], rtol=1e-6, atol=1e-7)
        assert not ema_params[k].requires_grad
    # an average, not a copy (the bias before BatchNorm gets no gradient: equal there)
    assert not torch.allclose(ema_params["0.weight"], net[0].weight)
    # buffers (BatchNorm running statistics, batch counter) are copied from the live network
    for (k, b), (_, eb) in zip(net.named_buffers(), ema.ema_model.named_buffers()):
        assert torch.equal(b, eb), k
    assert not ema.ema_model.training
    assert ema.eval_network is ema.ema_model


def test_ema_every_and_initial_copy():
    net = _net()
    x, y = _data()
    ema = EMAHandler(net, decay=0.5, every=2)
    for a, b in zip(ema.ema_model.parameters(), net.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # starts as an independent copy
    trainer = _sgd_trainer(net, x, y)
    ema.attach(trainer)
    trainer.run(range(3), max_epochs=2)
    assert ema.num_updates == 3


def test_decay_zero_changes_nothing():
    net = _net()
    x, y = _data()
    ema = EMAHandler(net, decay=0.0)
    assert not ema.enabled and ema.ema_model is None
    assert ema.eval_network is net
    trainer = _sgd_trainer(net, x, y)
    n_handlers = len(trainer._event_handlers[Events.ITERATION_COMPLETED])
    ema.attach(trainer)
    assert len(trainer._event_handlers[Events.ITERATION_COMPLETED]) == n_handlers

    # the same training with and without the (off) handler gives identical weights
    ref = _net()
    _sgd_trainer(ref, x, y).run(range(3), max_epochs=1)
    trainer.run(range(3), max_epochs=1)
    for a, b in zip(ref.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    assert ema.num_updates == 0


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_invalid_decay(decay):
    with pytest.raises(HemwslInputError, match="ema_decay"):
        EMAHandler(_net(), decay=decay)


def test_wrapped_network_is_tracked_unwrapped():
    net = _net()
    wrapped = torch.nn.DataParallel(net)  # on CPU: a plain wrapper, as DistributedDataParallel for the handler
    assert unwrap_network(wrapped) is net
    ema = EMAHandler(wrapped, decay=0.9)
    assert ema.model is net
    assert not isinstance(ema.ema_model, torch.nn.DataParallel)
    assert list(ema.ema_model.state_dict()) == list(net.state_dict())  # no "module." prefix in checkpoints
    assert EMAHandler(wrapped, decay=0.0).eval_network is wrapped  # off: the evaluator keeps the given network


def test_monai_evaluator_sees_ema_weights():
    """Wired as in train.yaml: the validation evaluator runs ``eval_network`` after every epoch."""
    net = _net()
    x, y = _data()
    train_data = [{"image": x[i:i + 8], "label": y[i:i + 8]} for i in range(0, 24, 8)]
    val_data = [{"image": x[:12], "label": y[:12]}]
    ema = EMAHandler(net, decay=0.7)
    collector = PredictionCollector(activation=None)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=val_data, network=ema.eval_network,
                                    val_handlers=[collector], decollate=False)
    validation = ValidationHandler(validator=evaluator, interval=1, epoch_level=True)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=train_data, network=net,
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
                                loss_function=torch.nn.BCEWithLogitsLoss(), decollate=False,
                                train_handlers=[ema, validation])
    trainer.run()
    assert ema.num_updates == 6
    logits, _ = collector.arrays()  # the last validation run, after the final update
    with torch.no_grad():
        want = ema.ema_model.eval()(x[:12]).numpy()
        live = net.eval()(x[:12]).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, live, atol=1e-4)


def test_checkpoint_and_report_names(tmp_path):
    assert checkpoint_file(tmp_path, "best").endswith(CHECKPOINTS["best"]) and CHECKPOINTS["best"] == "model.pt"
    assert checkpoint_file(tmp_path, "last").endswith("model_last.pt")
    assert report_name("test", "best") == "test" and report_name("val", "last") == "val_last"
    for bad in (lambda: checkpoint_file(tmp_path, "final"), lambda: report_name("test", "ema")):
        with pytest.raises(HemwslInputError, match="eval_checkpoint"):
            bad()


def test_summarize_cv_of_last_checkpoint_writes_its_own_summary(tmp_path):
    from hemwsl.engines.classifier import write_classification_report

    rng = np.random.default_rng(0)
    for k in range(2):
        fold = tmp_path / f"fold{k}"
        y = (rng.random(30) < 0.4).astype(float)
        c = PredictionCollector(activation=None)
        c.probs, c.labels = [np.clip(y * 0.4 + rng.random(30) * 0.6, 0, 1)[:, None]], [y[:, None]]
        c.to_csv(fold / "predictions_test_last.csv")
        write_classification_report(fold / "predictions_test_last.csv", fold, name="test_last")
    res = summarize_cv(tmp_path, 2, name="test_last")
    assert res["name"] == "test_last"
    assert (tmp_path / "cv_summary_last.json").is_file() and (tmp_path / "cv_summary_last.md").is_file()
    assert not (tmp_path / "cv_summary.json").exists()  # the best checkpoint's summary is left alone
