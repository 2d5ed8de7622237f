"""Tasks as data (packaged YAML, local files, user YAML), prompt layouts, and the one-line errors of bad input."""

import json

import pytest
import torch

from iclab.errors import UserError
from iclab.lm.loading import load
from iclab.lm.prompts import build_layout, label_ids
from iclab.lm.tasks import load_data, load_task, packaged_tasks
from iclab.lm.tiny import tiny_tokenizer

# REFERENCE.md section 2: Dai et al.'s templates and label words
PAPER = {
    "sst2": ("glue", "Sentence: {sentence} Label:", [" Negative", " Positive"]),
    "sst5": ("SetFit/sst5", "Sentence: {text} Label:", [" terrible", " bad", " neutral", " good", " great"]),
    "mr": ("rotten_tomatoes", "Review: {text} Sentiment:", [" Negative", " Positive"]),
    "subj": ("SetFit/subj", "Input: {text} Type:", [" objective", " subjective"]),
    "agnews": (
        "ag_news",
        "Classify the news articles into the categories of World, Sports, Business, and Technology. "
        "Article: {text} Answer:",
        [" World", " Sports", " Business", " Technology"],
    ),
    "cb": (
        "super_glue",
        "{premise} Question: {hypothesis}. True, False, or Neither? Answer:",
        [" True", " False", " Neither"],
    ),
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_paper_tasks_carry_the_reference_templates_and_label_words():
    assert set(PAPER) <= set(packaged_tasks())
    for name, (hub, template, words) in PAPER.items():
        task = load_task(name)
        assert (task.hub, task.template, task.words) == (hub, template, words), name


def test_offline_sets_are_balanced_and_the_ab_variant_shares_their_data():
    for name, classes, (n_train, n_test) in (("fortunes-topics", 4, (320, 160)), ("shakespeare-genre", 2, (300, 150))):
        data = load_data(load_task(name))
        assert (len(data.train), len(data.test)) == (n_train, n_test)
        counts = torch.bincount(torch.tensor([r["label"] for r in data.train]))
        assert counts.tolist() == [n_train // classes] * classes
        ab = load_data(load_task(f"{name}-ab"))
        assert ab.train == data.train and ab.test == data.test
        assert load_task(f"{name}-ab").words == [" A", " B", " C", " D"][:classes]
        assert not {r["text"] for r in data.train} & {r["text"] for r in data.test}  # no test text in train


def test_paper_task_from_local_csv_in_the_dataset_schema(tmp_path):
    rows = [
        {"idx": i, "sentence": f"a {'fine' if i % 2 else 'dull'} film number {i}", "label": i % 2} for i in range(30)
    ]
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[:10]).to_parquet(tmp_path / "test.parquet")
    data = load_data(load_task("sst2", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.parquet")))
    assert data.train[3] == {"sentence": "a fine film number 3", "label": 1}
    assert len(data.test) == 10


def test_a_yaml_task_with_its_own_files_and_label_map(tmp_path, tok):
    lines = [json.dumps({"q": f"is {i} even", "answer": "yes" if i % 2 == 0 else "no"}) for i in range(40)]
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "even.yaml").write_text(
        "train: all.jsonl\ntest: all.jsonl\ntemplate: 'Q: {q}? A:'\nlabel_field: answer\n"
        "labels: {'no': ' No', 'yes': ' Yes'}\n"
    )
    task = load_task(str(tmp_path / "even.yaml"))
    data = load_data(task)
    assert data.train[0] == {"q": "is 0 even", "label": 1}
    layout = build_layout(tok, task, data, k=3, seed=0, limit=5, n_val=2, budget=200)
    d = layout.data
    assert len(d.demos) == 3 and len(d.gold) == 5 and d.zsl.prefix.tolist() == [[0]]  # BOS = <|endoftext|>
    # the ICL prefix is BOS + each demonstration (input, label word, EOS): FT's training sequences without BOS
    assert torch.equal(d.icl.prefix[0, 1:], torch.cat([x[0, 1:] for x in d.demos]))
    assert d.demos[0][0, -1] == tok.eos_token_id
    assert tok.decode(d.zsl.queries[0, : d.zsl.lengths[0]]).startswith("Q: is")
    assert tok.decode(d.content_free[0]) == "Q: N/A? A:"


def test_demonstrations_are_seeded_and_cut_to_the_budget(tok):
    task = load_task("fortunes-topics")
    data = load_data(task)
    a = build_layout(tok, task, data, k=8, seed=3, limit=4, n_val=2, budget=4000)
    b = build_layout(tok, task, data, k=8, seed=3, limit=4, n_val=2, budget=4000)
    c = build_layout(tok, task, data, k=8, seed=4, limit=4, n_val=2, budget=4000)
    assert a.demos == b.demos and a.demos != c.demos and a.test == c.test  # the test set does not move with the seed
    short = build_layout(tok, task, data, k=8, seed=3, limit=4, n_val=2, budget=300)
    assert 0 < short.k < 8 and short.demos == a.demos[: short.k] and short.prompt_tokens <= 300


def test_bad_input_is_one_line_that_says_what_to_do(tmp_path, tok, monkeypatch):
    task = load_task("shakespeare-genre")
    data = load_data(task)
    cases = [
        (lambda: load_task("sst3"), "unknown task 'sst3'"),
        (lambda: load_task(str(tmp_path / "none.yaml")), "does not exist"),
        (
            lambda: load_data(load_task("sst2", train=str(tmp_path / "x.csv"), test=str(tmp_path / "x.csv"))),
            "x.csv does not exist",
        ),
        (lambda: build_layout(tok, task, data, k=400, seed=0, limit=4, n_val=2, budget=999), "has 300"),
    ]
    (tmp_path / "t.csv").write_text("text,label\nhello,0\nworld,1\n")
    (tmp_path / "nofield.yaml").write_text(
        "train: t.csv\ntest: t.csv\ntemplate: 'Review: {review}'\nlabels: [' a', ' b']\n"
    )
    cases.append((lambda: load_data(load_task(str(tmp_path / "nofield.yaml"))), "'review' is not a column"))
    (tmp_path / "bare.yaml").write_text("train: t.csv\ntest: t.csv\ntemplate: 'Review:'\nlabels: [' a', ' b']\n")
    cases.append((lambda: load_task(str(tmp_path / "bare.yaml")), "template has no {field}"))
    (tmp_path / "typo.yaml").write_text("train: t.csv\ntest: t.csv\ntemplat: '{text}'\nlabels: [' a', ' b']\n")
    cases.append((lambda: load_task(str(tmp_path / "typo.yaml")), "did you mean 'template'"))
    (tmp_path / "yes.yaml").write_text("train: t.csv\ntest: t.csv\ntemplate: '{text}'\nlabels: {no: ' n', yes: ' y'}\n")
    cases.append((lambda: load_task(str(tmp_path / "yes.yaml")), "quote it"))
    cases.append((lambda: load("no-such-org/no-such-model"), "cannot load model 'no-such-org/no-such-model'"))
    cases.append((lambda: load(str(tmp_path / "m.gguf")), "does not exist"))
    for make, message in cases:
        with pytest.raises(UserError, match=message) as e:
            make()
        assert "\n" not in str(e.value)

    class Silent:  # a tokenizer that drops a word entirely
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[] if t == " Ø" else [1] for t in texts]}

    task.labels = {"comedy": " Ø", "tragedy": " B"}
    with pytest.raises(UserError, match="label word ' Ø' tokenizes to nothing"):
        label_ids(Silent(), task)

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="needs the Python package 'gguf': pip install gguf"):
        load(str(tmp_path / "m.gguf"))
