"""Write the per-variant run configs: configs/{mr,snli,shakespeare}/<variant>.yaml.

    python configs/generate.py        # rewrites them; tests/test_configs.py checks they are current
"""

from __future__ import annotations

from pathlib import Path

import yaml

import hf_attn_variants as hv

HERE = Path(__file__).resolve().parent
BERT = {"family": "bert", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 1024}
GPT2 = {"family": "gpt2", "n_embd": 256, "n_layer": 4, "n_head": 4}
TRAINING = {"eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 2, "logging_strategy": "steps",
            "logging_steps": 50,
            "load_best_model_at_end": True, "warmup_steps": 0.06, "weight_decay": 0.01, "seed": 42,
            "report_to": "tensorboard"}
# the variant fields per variant (head size 64: window w, rank r, additive size a), from each variant's spec
VARIANTS = {name: dict(spec.example_fields) for name, spec in hv.VARIANTS.items()}
TASKS = {
    "mr": {"task": "classification", "model": BERT, "tokenizer": {"vocab_size": 8000},
           "data": {"dataset": "mr", "max_length": 64},
           "training": {"num_train_epochs": 5, "per_device_train_batch_size": 32, "learning_rate": 5.0e-4,
                        "metric_for_best_model": "accuracy"}},
    "snli": {"task": "pair_classification", "model": BERT, "tokenizer": {"vocab_size": 12000},
             "data": {"dataset": "snli", "max_length": 96},
             "training": {"num_train_epochs": 3, "per_device_train_batch_size": 64, "learning_rate": 5.0e-4,
                          "metric_for_best_model": "accuracy"}},
    "shakespeare": {"task": "causal_lm", "model": GPT2, "tokenizer": {"vocab_size": 8000},
                    "data": {"dataset": "shakespeare", "max_length": 256},
                    "training": {"num_train_epochs": 5, "per_device_train_batch_size": 16, "learning_rate": 5.0e-4,
                                 "metric_for_best_model": "perplexity", "greater_is_better": False}},
}


def config(task: str, variant: str) -> dict:
    spec = TASKS[task]
    fields = dict(hv.VARIANTS[variant].example_fields)
    if task == "shakespeare" and "attention_window" in fields:
        fields["attention_window"] = 32  # a causal look-back of 32 tokens
    return {"task": spec["task"], "model": dict(spec["model"]), "variant": {"attention_variant": variant, **fields},
            "tokenizer": spec["tokenizer"], "data": spec["data"],
            "training": {"output_dir": f"outputs/{task}/{variant}", **TRAINING, **spec["training"]}}


def render(task: str, variant: str) -> str:
    header = (f"# {variant} attention on {task} ({TASKS[task]['task']}); written by configs/generate.py.\n"
              f"#   hf-attn-variants train configs/{task}/{variant}.yaml [key=value ...]\n")
    return header + yaml.safe_dump(config(task, variant), sort_keys=False)


def main() -> None:
    for task in TASKS:
        (HERE / task).mkdir(exist_ok=True)
        for variant in VARIANTS:
            (HERE / task / f"{variant}.yaml").write_text(render(task, variant))


if __name__ == "__main__":
    main()
