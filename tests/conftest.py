import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


# A model and run small enough to train in a second or two.
TINY = [
    "dims=3",
    "points=7",
    "model.layers=1",
    "model.width=16",
    "model.heads=2",
    "train.batch_size=8",
    "train.warmup=2",
    "train.log_every=1",
    "train.eval_every=5",
    "train.eval_prompts=16",
    "train.checkpoint_every=5",
    "eval.prompts=32",
    "eval.bootstrap=50",
]
