"""ICL vs finetuning (Dai et al. 2023) in one place: the engine (engine.py: the study; conditions.py, finetune.py,
attention.py, updates.py: its parts), the model interface it is written against (adapter.py; Hugging Face models
get theirs in iclab.lm.adapters), and the measures (metrics.py). The dual-form maths of linear attention stays in
iclab.analysis.dual."""
