import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The test modules of the `lm` extra (Hugging Face models). `make test` installs the extra (dev depends on it), so
# they must run there: without it the session stops with one line, unless ICLAB_TESTS_WITHOUT_LM=1 skips them.
LM_MODULES = {"test_lm_adapters.py", "test_lm_momentum.py", "test_lm_study.py", "test_lm_tasks.py"}
WITHOUT_LM = "ICLAB_TESTS_WITHOUT_LM"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    lm = [item for item in items if item.path.name in LM_MODULES]
    if not lm:
        return
    try:
        import transformers  # noqa: F401
    except ImportError:
        if os.environ.get(WITHOUT_LM) != "1":
            pytest.exit(
                f"the lm extra is not installed, so {len(lm)} tests cannot run: pip install -e '.[lm]' "
                f"(or set {WITHOUT_LM}=1 to skip them)",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        for item in lm:
            item.add_marker(pytest.mark.skip(reason=f"the lm extra is not installed ({WITHOUT_LM}=1)"))


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


def demo_loss(adapter, demos) -> float:
    """The LM cross-entropy on every token of the demonstrations (what finetuning on them minimises)."""
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(adapter.logits(ids[:, :-1])[0], ids[0, 1:]) for ids in demos]
    return float(torch.stack(losses).mean())


def assert_finetuned_key_value_only(adapter, tuned, demos) -> None:
    """What K/V finetuning on the demonstrations must have done to the copy `tuned` of adapter's model: every
    key/value parameter moved (for a fused QKV projection, its K and V entries, never its Q entries), every other
    parameter is unchanged, and the loss on the demonstrations fell."""
    assert tuned is not None, "finetuning diverged"
    kv = {p.name: p.mask for p in adapter.kv_parameters()}
    after = dict(tuned.model.named_parameters())
    for name, p in adapter.model.named_parameters():
        changed = p.detach() != after[name].detach()
        if name in kv:
            mask = torch.ones_like(changed) if kv[name] is None else kv[name].bool()
            assert changed[mask].any() and not changed[~mask].any(), name
        else:
            assert not changed.any(), name
    assert demo_loss(tuned, demos) < demo_loss(adapter, demos)
