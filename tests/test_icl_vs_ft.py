import math

import pytest
import torch

from iclab.icl_vs_ft.adapter import IclabLMAdapter
from iclab.icl_vs_ft.engine import StudyData, finetune, study
from iclab.model import ModelConfig, TokenLM
from iclab.tasks.keywords import KeywordClassification

TASK = KeywordClassification(vocab=24, keywords=3, length=4)


def data(k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    instance = TASK.instances(1, g)
    return StudyData(**TASK.study_inputs(instance, k, n_test=10, n_val=6, generator=g))


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    return IclabLMAdapter(TokenLM(ModelConfig(layers=2, width=16, heads=2), vocab=24, max_tokens=64))


def test_layout_lines_up_demonstrations_and_queries():
    d = data()  # full (N, tokens) tensors become a shared prefix and the queries' own tokens
    assert d.icl.prefix.shape == (1, 1 + 3 * 6) and d.icl.queries.shape == (10, 4) and d.zsl.prefix.shape == (1, 1)
    assert torch.equal(d.icl.queries, d.zsl.queries)  # the same query tokens end both sequences
    demo_tokens = torch.cat([x[0, 1:] for x in d.demos])
    assert torch.equal(d.icl.full()[0, d.demo_positions], demo_tokens)  # ICL's demonstrations are FT's training tokens


def test_finetuning_moves_only_key_and_value_rows(adapter):
    tuned = finetune(adapter, data().demos, lr=0.5)
    before, after = adapter.model.state_dict(), tuned.model.state_dict()
    width = 16
    for name in before:
        changed = ~torch.isclose(before[name], after[name])
        if name.endswith("qkv.weight") or name.endswith("qkv.bias"):
            assert not changed[:width].any() and changed[width:].any(), name
        else:
            assert not changed.any(), name


def test_study_reports_every_measure_with_baselines(adapter):
    result = study(adapter, data(), lrs=[0.01, 0.1])
    assert set(result.accuracy) == {"zsl", "icl", "ft"} and result.ft_lr in (0.01, 0.1)
    for key in ("simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"):
        assert -1 <= result.measures[key] <= 1
    for key in ("simaou", "simam_icl_ft", "kendall"):
        assert -1 <= result.random[key] <= 1
    assert len(result.per_layer["simaou"]) == 2


def test_a_diverging_grid_is_reported_not_a_nan(adapter):
    result = study(adapter, data(), lrs=[1e30])
    assert result.ft_grid == {"1e+30": "diverged"} and result.accuracy["ft"] is None
    assert result.measures["simaou"] is None and not math.isnan(result.measures["simam_icl_zsl"])


def test_bad_inputs_are_named():
    from iclab.errors import UserError
    from iclab.model import ICLTransformer

    short = IclabLMAdapter(TokenLM(ModelConfig(layers=1, width=8, heads=1), vocab=24, max_tokens=10))
    with pytest.raises(UserError, match="take 23 tokens but the model's context is 10"):
        study(short, data(), lrs=[0.1])
    with pytest.raises(UserError, match="cannot find the key/value projections of ICLTransformer"):
        IclabLMAdapter(ICLTransformer(ModelConfig(layers=1, width=8, heads=1), dims=2, max_points=3))
