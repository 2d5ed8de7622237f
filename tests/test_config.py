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
    # the place, not only PyYAML's first line: where the problem was found, and where the open bracket started
    expected = f"config file {bad} is not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"
    message = error_of(path=bad)
    assert expected in message and "(while parsing a flow sequence at line 1, column 8)" in message
    indented = tmp_path / "indented.yaml"
    indented.write_text("train:\n  steps: 5\n  lr: 1e-3\n   warmup: 3\n")
    assert "indented.yaml is not valid YAML: line 4, column 10: mapping values are not allowed here" in error_of(
        path=indented
    )
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


def test_registry_refuses_a_name_registered_twice():
    from iclab.spec import Registry

    registry = Registry("widget")

    @registry.register("a")
    class A:
        pass

    assert registry.register("a")(A) is A  # the same class again (a module imported under two names) is no clash
    with pytest.raises(UserError) as info:

        @registry.register("a")
        class B:
            pass

    message = str(info.value)
    assert "\n" not in message and message.startswith("widget 'a' is already registered (by ")
    assert "A)" in message and "B under another name" in message
    assert registry.get("a") is A  # the first registration stands


def test_a_builtin_name_cannot_be_replaced():
    from iclab.tasks import FUNCTION_CLASSES
    from iclab.tasks.functions import Linear

    with pytest.raises(UserError, match="task 'linear' is already registered"):
        FUNCTION_CLASSES.register("linear")(type("MyLinear", (Linear,), {}))
    assert FUNCTION_CLASSES.get("linear") is Linear


@pytest.mark.parametrize(
    "option, spec, message",
    [
        ("--task", "linear:nnz=2", "--task linear:nnz=2: 'linear' takes no parameter 'nnz'; it takes none"),
        (
            "--task",
            "sparse_linear:nzz=2",
            "--task sparse_linear:nzz=2: 'sparse_linear' takes no parameter 'nzz' (did you mean 'nnz'?); allowed: nnz",
        ),
        ("--task", "sparse_linear:nnz=9", "--task sparse_linear:nnz=9: parameter 'nnz': must be <= dims (5), got 9"),
        ("--task", "nope", "--task nope: unknown task 'nope'"),
    ],
)
def test_spec_errors_on_the_command_line_name_the_option_and_the_spec(option, spec, message):
    from iclab.spec import parse_named
    from iclab.tasks import make_task

    with pytest.raises(UserError) as info:
        make_task(parse_named(spec), 5, prefix=option)
    assert str(info.value).startswith(message) and "config key" not in str(info.value)


def test_the_same_spec_in_a_config_names_the_config_key():
    assert "unknown config key 'task.nnz'; allowed: dims" in error_of(["task.name=linear", "task.nnz=2"])
