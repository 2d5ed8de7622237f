import pytest

from iclab.config import load_config, packaged_config
from iclab.errors import UserError


def error_of(overrides=None, path=None):
    with pytest.raises(UserError) as info:
        load_config(path, overrides or [])
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=3e-4", "model.layers=2", "task.name=sparse_linear", "task.nnz=2"])
    assert cfg.train.lr == 3e-4 and cfg.model.layers == 2 and cfg.task == {"name": "sparse_linear", "nnz": 2}


def test_packaged_configs_load():
    cfg = load_config(packaged_config("demo"))
    assert cfg.task["name"] == "linear" and cfg.dims == 5
    garg = load_config(packaged_config("garg"))
    assert (garg.dims, garg.points, garg.model.layers, garg.model.width, garg.model.heads) == (20, 41, 12, 256, 8)
    assert garg.curriculum.dims.at(30_000) == 20 and garg.curriculum.points.at(30_000) == 41


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dims: 8\npoints: 17\ntrain:\n  lr: 1e-3\ncurriculum:\n  dims: {start: 3, end: 8, inc: 1, every: 100}\n"
    )
    cfg = load_config(path)
    assert cfg.dims == 8 and cfg.train.lr == 1e-3 and cfg.curriculum.dims.at(250) == 5


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.lrr=1"], "unknown config key 'train.lrr' (did you mean 'lr'?); allowed: autocast, batch_size"),
        (["trian.lr=1"], "unknown config key 'trian' (did you mean 'train'?)"),
        (["train.lr=abc"], "config key 'train.lr': expected a number, got 'abc'"),
        (["train.steps=1.5"], "config key 'train.steps': expected an integer, got 1.5"),
        (["dims=-3"], "config key 'dims': must be >= 1, got -3"),
        (["dims=0"], "config key 'dims': must be >= 1, got 0"),
        (["task.name=sparse_linear", "task.nnz=9"], "config key 'task.nnz': must be <= dims (5), got 9"),
        (["task.name=linearr"], "unknown task 'linearr' (did you mean 'linear'?); allowed: convex, finite_pool"),
        (["inputs.name=skew"], "unknown input distribution 'skew'"),
        (["eval.baselines=[lasso, nope]"], "unknown estimator 'nope'"),
        (["model.width=30", "model.heads=4"], "config key 'model.width': must be divisible by heads (4), got 30"),
        (["model.attention=cosine"], "config key 'model.attention': 'cosine' is not one of softmax, linear"),
        (["curriculum.dims={start: 2, end: 9}"], "config key 'curriculum.dims.end': must be <= dims (5), got 9"),
        (["train.schedule=warm"], "'warm' is not one of constant, cosine, linear"),
        (["model=3"], "config key 'model': expected a mapping, got 3"),
        (["lr"], "bad --set 'lr': write --set key=value"),
        (["train.autocast=fp8"], "config key 'train.autocast': 'fp8' is not one of none, bf16"),
        (["train.autocast=bf16", "dtype=float64"], "'train.autocast': bf16 autocast needs dtype float32, got float64"),
        (["train.compile=yes please"], "config key 'train.compile': expected true or false"),
        (["train.lr=.nan"], "config key 'train.lr': expected a finite number, got nan"),
        (["train.grad_clip=.inf"], "config key 'train.grad_clip': expected a finite number, got inf"),
        (["train.betas=[0.9, -.inf]"], "config key 'train.betas[1]': expected a finite number, got -inf"),
        (["task.name=noisy_linear", "task.noise_std=.nan"], "config key 'task.noise_std': expected a finite number"),
    ],
)
def test_bad_config_values(overrides, expected):
    assert expected in error_of(overrides)


def test_missing_and_broken_files(tmp_path):
    assert "config file not found" in error_of(path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert f"config file {bad} is not valid YAML" in error_of(path=bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert "must hold a mapping" in error_of(path=listy)


def test_unknown_packaged_config():
    with pytest.raises(UserError, match="unknown packaged config 'dem' .*did you mean 'demo'"):
        packaged_config("dem")


def test_comma_lists_of_specs_keep_multi_parameter_specs_whole():
    from iclab.spec import split_specs

    assert split_specs("least_squares,boosting:rounds=5,max_depth=3,knn") == [
        "least_squares",
        "boosting:rounds=5,max_depth=3",
        "knn",
    ]
    assert split_specs("bayes:nnz=[5,2],weights=[1,1], lasso:alpha=0.1,") == [
        "bayes:nnz=[5,2],weights=[1,1]",
        "lasso:alpha=0.1",
    ]
