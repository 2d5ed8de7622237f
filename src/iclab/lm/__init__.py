"""The causal-LM backend: Hugging Face (and GGUF) models, classification tasks as data, prefix-cached scoring,
and the ICL-vs-finetuning study on real pretrained language models (install with `pip install iclab[lm]`).

    from iclab.lm.study import StudyConfig, run_study
    results = run_study(StudyConfig(model="smollm2", task="fortunes-topics", seeds=[0, 1, 2]), "runs/lm")

Modules: loading (model specs, GGUF conversion), adapters (hooks for GPT-2, GPT-NeoX, Llama-like, OPT, XGLM),
tasks (YAML task files and their data), prompts (token layouts), study (the runner; its tables are
iclab.icl_vs_ft.results), momentum (momentum attention patched into HF models at inference), tiny (random test
models); the CLI is iclab.cli.lm (`iclab lm ...`). This package imports nothing heavy at load time: the CLI
must start fast.
"""
