"""HashNet: weighted pairwise likelihood against a pair loop, and its continuation schedule."""

from __future__ import annotations

import math

import pytest
import torch

from nhl.losses import build_loss


def reference_hashnet(u, labels, alpha, scale):
    """Mean over similar pairs + mean over dissimilar pairs of log(1 + e^t) - s t, with
    t = alpha * tanh(scale u_i) . tanh(scale u_j); all ordered pairs, (i, i) included."""
    n = len(u)
    h = [[math.tanh(scale * x) for x in row] for row in u]
    groups = {0.0: [], 1.0: []}
    for i in range(n):
        for j in range(n):
            s = 1.0 if float(labels[i] @ labels[j]) > 0 else 0.0
            t = alpha * sum(a * b for a, b in zip(h[i], h[j], strict=True))
            groups[s].append(math.log(1 + math.exp(t)) - s * t)
    kinds = [g for g in groups.values() if g]
    if len(kinds) == 1:
        return sum(kinds[0]) / len(kinds[0])
    return sum(sum(g) / len(g) for g in kinds)


LABELS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_hashnet_matches_pair_loop_with_balance_weights():
    torch.manual_seed(0)
    loss = build_loss("hashnet", bits=5, num_classes=3, num_train=10)
    assert loss.alpha == 2.0 and loss.scale == 1.0 and not loss.uses_memory_bank and loss.pairwise
    u = torch.randn(4, 5, dtype=torch.float64)
    value = loss(u, LABELS, torch.arange(4))
    assert value.item() == pytest.approx(reference_hashnet(u.numpy(), LABELS.numpy(), 2.0, 1.0), rel=1e-10)
    one_kind = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)  # every pair similar
    value = build_loss("hashnet", bits=5, num_classes=3, num_train=10, alpha=0.1)(u[:2], one_kind, torch.arange(2))
    assert value.item() == pytest.approx(reference_hashnet(u[:2].numpy(), one_kind.numpy(), 0.1, 1.0), rel=1e-10)


def test_hashnet_scale_grows_with_training_steps_only():
    loss = build_loss("hashnet", bits=5, num_classes=3, num_train=500, step_size=2, gamma=0.5)
    u = torch.randn(4, 5, dtype=torch.float64)
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11])]
    loss(u, LABELS, batches[0])
    first = loss(u, LABELS, batches[0])  # the same batch and codes again (the weighting probe): no step
    assert int(loss.step) == 1 and loss.scale == 1.0
    second = loss(u, LABELS, batches[1])  # step 2: scale (1 + 0.5 * 2) ** 0.5
    assert int(loss.step) == 2 and loss.scale == pytest.approx(math.sqrt(2.0))
    assert first.item() == pytest.approx(reference_hashnet(u.numpy(), LABELS.numpy(), 2.0, 1.0), rel=1e-10)
    assert second.item() == pytest.approx(reference_hashnet(u.numpy(), LABELS.numpy(), 2.0, math.sqrt(2.0)), rel=1e-10)
    loss(u, LABELS, batches[2])  # step 3 rounds down to 2: the scale changes only every step_size steps
    assert int(loss.step) == 3 and loss.scale == pytest.approx(math.sqrt(2.0))
    loss(u + 0.1, LABELS, batches[2])  # full-batch training: the same items, new codes, a new step
    assert int(loss.step) == 4 and loss.scale == pytest.approx(math.sqrt(3.0))
    loss.eval()
    loss(u, LABELS, batches[0])
    assert int(loss.step) == 4


def test_hashnet_default_schedule_and_checkpoint_round_trip():
    loss = build_loss("hashnet", bits=16, num_classes=3, num_train=10)
    assert (loss.init_scale, loss.gamma, loss.power, loss.step_size) == (1.0, 0.005, 0.5, 200)
    loss.step.fill_(199)
    assert loss.scale == 1.0
    loss(torch.randn(2, 16), torch.eye(3)[[0, 1]], torch.tensor([0, 1]))
    assert int(loss.step) == 200 and loss.scale == pytest.approx(math.sqrt(2.0))
    fresh = build_loss("hashnet", bits=16, num_classes=3, num_train=10)
    fresh.load_state_dict(loss.state_dict())  # checkpoints carry the step count
    assert int(fresh.step) == 200 and fresh.scale == loss.scale


def test_hashnet_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(2)
    loss = build_loss("hashnet", bits=16, num_classes=2, num_train=10)
    codes = torch.where(torch.rand(1, 16) < 0.5, 1.0, -1.0) * torch.tensor([[1.0], [-1.0]])
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1]]
    start = torch.randn(6, 16)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * 3 * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(6))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] < 1e-3


def test_hashnet_counts_one_step_per_batch_with_adaptive_weighting(digits_splits, tmp_path):
    """Adaptive weighting evaluates every loss twice per step (probe, then update): still one step each."""
    from nhl.training import TrainConfig, Trainer

    config = TrainConfig(
        loss="hashnet",
        lengths=(8, 16),
        adaptive=True,
        backbone="smallcnn",
        backbone_params={"width": 16},
        batch_size=50,
        epochs=1,
    )
    trainer = Trainer(config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path, progress=False)
    trainer.train_epoch()
    trainer.save_checkpoint()
    steps = math.ceil(len(digits_splits.train) / 50)
    assert [int(loss.step) for loss in trainer.objective.losses] == [steps, steps]
    saved = torch.load(trainer.checkpoint_path, weights_only=True)
    assert [int(saved["objective"][f"losses.{i}.step"]) for i in range(2)] == [steps, steps]


def test_committed_schedule_reaches_the_released_final_scale_in_our_step_count():
    # mnist5k: 2,000 items / batch 64 = 32 steps per epoch, 384 in 12 epochs. The released schedule
    # (gamma 0.005, step_size 200) is written for 10,000 iterations and ends at sqrt(1 + 0.005 * 9800).
    released_end = math.sqrt(1 + 0.005 * 9800)  # 7.071
    released = build_loss("hashnet", bits=64, num_classes=10, num_train=2000)
    released.step.fill_(384)
    assert released.scale == pytest.approx(math.sqrt(1 + 0.005 * 200))  # 384 rounds down to 200: 1.414
    committed = build_loss("hashnet", bits=64, num_classes=10, num_train=2000, gamma=0.13, step_size=8)
    committed.step.fill_(384)
    assert committed.scale == pytest.approx(math.sqrt(1 + 0.13 * 384))  # 7.133
    assert committed.scale == pytest.approx(released_end, rel=0.01)
    committed.step.fill_(15)  # 15 rounds down to 8
    assert committed.scale == pytest.approx(math.sqrt(1 + 0.13 * 8))
