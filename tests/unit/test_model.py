import numpy as np
import torch

from common.model import build_model, load_vector, model_vector, pinball_loss
from common.training import predict_scaled, train_local
from common.windows import EVENT_BUCKETS, KNOWN_FEATURES, MAX_STATIC, PAST_ONLY, build_windows, series_stats
from tests.conftest import model_config, toy_panel, train_config


def test_output_shapes_and_attention():
    cfg = model_config(lookback=14, horizon=5, hidden=16)
    model = build_model(cfg, 0).eval()
    b, k = 3, len(KNOWN_FEATURES)
    q, attn = model(
        torch.randn(b, 14, PAST_ONLY + k),
        torch.randn(b, 5, k),
        torch.zeros(b, 14, dtype=torch.long),
        torch.ones(b, 5, dtype=torch.long),
        torch.zeros(b, MAX_STATIC, dtype=torch.long),
        torch.zeros(b),
        return_attention=True,
    )
    assert q.shape == (b, 5, len(cfg.quantiles))
    assert attn.shape == (b, 5, 14)
    assert torch.allclose(attn.sum(-1), torch.ones(b, 5), atol=1e-5)


def test_quantiles_never_cross_even_for_random_weights():
    cfg = model_config(lookback=10, horizon=4, hidden=8, heads=2)
    for seed in range(5):
        model = build_model(cfg, seed)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 3)  # extreme weights
        k = len(KNOWN_FEATURES)
        q = model(
            torch.randn(64, 10, PAST_ONLY + k) * 5,
            torch.randn(64, 4, k) * 5,
            torch.randint(0, EVENT_BUCKETS, (64, 10)),
            torch.randint(0, EVENT_BUCKETS, (64, 4)),
            torch.randint(0, 64, (64, MAX_STATIC)),
            torch.randn(64),
        )
        assert (q.diff(dim=-1) >= 0).all()


def test_same_seed_gives_same_initial_weights():
    cfg = model_config(hidden=16)
    assert np.array_equal(model_vector(build_model(cfg, 5)), model_vector(build_model(cfg, 5)))
    assert not np.array_equal(model_vector(build_model(cfg, 5)), model_vector(build_model(cfg, 6)))


@torch.no_grad()
def mean_pinball(model, windows) -> float:
    pred = predict_scaled(model, windows)
    target = windows.batch(np.arange(len(windows)))["target"]
    return float(pinball_loss(torch.from_numpy(pred), torch.from_numpy(target), model.cfg.quantiles))


def test_loss_decreases_on_a_learnable_toy_series():
    torch.manual_seed(0)
    panel = toy_panel()
    stats = series_stats(panel, ("category",))
    cfg = model_config(lookback=14, horizon=7, hidden=16)
    windows = build_windows(panel, stats, cfg.lookback, cfg.horizon)
    model = build_model(cfg, 0)
    before = mean_pinball(model, windows)
    train_local(model, windows, train_config(epochs=6, max_batches_per_epoch=30, batch_size=64), seed=0)
    after = mean_pinball(model, windows)
    assert after < 0.5 * before


def test_parameter_vector_round_trip():
    cfg = model_config(hidden=16)
    a, b = build_model(cfg, 1), build_model(cfg, 2)
    load_vector(b, model_vector(a))
    panel = toy_panel(2, 60)
    windows = build_windows(panel, series_stats(panel, ()), cfg.lookback, cfg.horizon)
    assert np.allclose(predict_scaled(a, windows), predict_scaled(b, windows))


def test_young_series_are_left_padded_not_dropped():
    panel = toy_panel(1, 30)
    windows = build_windows(panel, series_stats(panel, ()), lookback=28, horizon=7, origins="last")
    assert len(windows) == 1
    past = windows.batch(np.array([0]))["past"][0]
    assert past[:5, 1].sum() == 0 and past[-1, 1] == 1  # observed mask: 0 in padding


def test_a_proximal_term_keeps_local_steps_near_the_starting_model():
    """FedProx's μ: the larger it is, the less a site's training moves the model it was given."""
    panel = toy_panel()
    cfg = model_config(lookback=14, horizon=7, hidden=16)
    windows = build_windows(panel, series_stats(panel, ("category",)), cfg.lookback, cfg.horizon)
    start = model_vector(build_model(cfg, 0))
    moved = []
    for mu in (0.0, 0.0, 50.0):
        model = build_model(cfg, 0)
        train = train_config(epochs=2, max_batches_per_epoch=10, batch_size=64, proximal=mu)
        train_local(model, windows, train, seed=0)
        moved.append(float(np.linalg.norm(model_vector(model) - start)))
    assert moved[0] == moved[1] > 0  # without it, training is unchanged and deterministic
    assert moved[2] < 0.5 * moved[0]
