"""The causal-LM backend: Hugging Face (and GGUF) models, classification tasks as data, prefix-cached scoring,
and the ICL-vs-finetuning study on real pretrained language models (install with `pip install iclab[lm]`)."""
