"""Worker for test_ranks_agree.py, run under torchrun: ranks whose own val scores would differ.

Each epoch, every rank shifts its BatchNorm running means by a rank-dependent amount, and
`evaluate()` returns a rank-dependent script of scores (rank 0 peaks at epoch 2, rank 1 keeps
improving). Deciding alone, rank 0 would stop after epoch 4 while rank 1 waits in the next
all-reduce. Each rank writes what it decided and a digest of its final model to <out>/rank<r>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch
from torch.utils.data import Dataset

from nhl.training import TrainConfig, Trainer

SCRIPTS = {0: [0.1, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], 1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}


class Tiny(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.images = torch.randn(n, 1, 16, 16, generator=g) + self.labels[:, None, None, None].float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], torch.nn.functional.one_hot(self.labels[i], 4).float(), i


class RankDependentTrainer(Trainer):
    def train_epoch(self):
        record = super().train_epoch()
        with torch.no_grad():
            for module in self.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean += 0.5 * (self.dist.rank + 1)
        return record

    def evaluate(self):
        return dict.fromkeys(self.config.lengths, SCRIPTS[self.dist.rank][self.epoch - 1])


def main(out: str) -> None:
    config = TrainConfig(
        loss="csq",
        lengths=(8,),
        backbone="smallcnn",
        backbone_params={"width": 4},
        input_size=16,
        epochs=8,
        batch_size=16,
        patience=2,
        seed=0,
        device="cpu",
    )
    trainer = RankDependentTrainer(
        config, Tiny(64, 0), Tiny(16, 1), Tiny(64, 0), os.path.join(out, "work"), progress=False
    )
    result = trainer.fit()
    digest = hashlib.sha256(
        b"".join(t.detach().cpu().numpy().tobytes() for t in result.model.state_dict().values())
    ).hexdigest()
    with open(os.path.join(out, f"rank{trainer.dist.rank}.json"), "w") as fh:
        json.dump(
            {
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "best_score": result.best_score,
                "digest": digest,
            },
            fh,
        )


if __name__ == "__main__":
    main(sys.argv[1])
