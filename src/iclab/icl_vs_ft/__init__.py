"""ICL vs finetuning (Dai et al. 2023) in one place: the engine (engine.py: the study; conditions.py, finetune.py,
attention.py, updates.py: its parts), the model interface it is written against (adapter.py; Hugging Face models
get theirs in iclab.lm.adapters), the measures (metrics.py) and the results over seeds or instances with their
tables (results.py, for `iclab lm run` and the icl-vs-ft recipe alike). The dual-form maths of linear attention
stays in iclab.analysis.dual."""
