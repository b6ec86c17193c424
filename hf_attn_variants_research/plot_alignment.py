"""Alignment pictures of trained date-normalisation models, in the manner of Bahdanau et al. 2015's figures.

    hf-attn-variants plot-alignment OUT_DIR MODEL_DIR [MODEL_DIR ...] [--layer -1]

For each model folder (written by ``hf_attn_variants_research/train.py configs/dates/<variant>.yaml``: an
``EncoderDecoderModel`` and its character tokenizer) the script decodes the same test sentences
greedily, feeds the decoded output back in once with ``output_attentions=True`` and draws the
cross-attention weights α_ij of one decoder layer (mean over its heads): one row per generated
character i, one column per source character j, white = 0, black = 1. Writes
``OUT_DIR/alignment_<name>.png`` (name = the model folder's parent) and prints the sentences.

Not imported by the package (a training helper).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, EncoderDecoderModel  # noqa: E402

import hf_attn_variants  # noqa: E402, F401  (registers the families with AutoConfig)

from . import dates  # noqa: E402

# (locale, format) of the pictured test sentences: names in four languages, reordering, numbers
PICTURED = [("fr_FR", "full"), ("en_US", "ordinal"), ("de_DE", "long"), ("es_ES", "full"), ("en_US", "M/d/yy"),
            ("nl_NL", "medium")]


def pictured_sources() -> list[str]:
    """The first test sentence of each PICTURED format (the test split of ``dates.build_dates``)."""
    test = dates.build_dates()["test"]
    out = []
    for locale, fmt in PICTURED:
        out.append(next(s for s, loc, f in zip(test["source"], test["locale"], test["format"])
                        if (loc, f) == (locale, fmt)))
    return out


def alignments(model, tokenizer, sources: list[str], layer: int):
    """(source tokens, output tokens, weights (T_out, T_src)) per source sentence."""
    result = []
    for source in sources:
        enc = tokenizer(source, return_tensors="pt")
        generated = model.generate(**enc, max_new_tokens=16, do_sample=False)  # [BOS] y_1 ... [EOS]
        with torch.no_grad():
            out = model(**enc, decoder_input_ids=generated[:, :-1], output_attentions=True)
        weights = out.cross_attentions[layer][0].mean(0)  # (T_out, T_src): row i predicts generated[i + 1]
        src = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
        tgt = tokenizer.convert_ids_to_tokens(generated[0, 1:])
        result.append((src, tgt, weights.numpy()))
    return result


def draw(panels, title: str, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.5))
    for ax, (src, tgt, weights) in zip(axes.flat, panels):
        ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src)), [t if t != " " else "␣" for t in src], fontsize=7)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=7)
        ax.tick_params(length=0)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.rename(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--layer", type=int, default=-1, help="decoder layer (default: the last)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = pictured_sources()
    for folder in map(Path, args.models):
        model = EncoderDecoderModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        name = folder.parent.name if folder.name == "model" else folder.name
        panels = alignments(model, tokenizer, sources, args.layer)
        variant = model.decoder.config.cross_attention_variant
        layer = args.layer % model.decoder.config.n_layer
        draw(panels, f"{variant} cross-attention, decoder layer {layer}, mean over heads", out_dir /
             f"alignment_{name}.png")
        for source, (_, tgt, _) in zip(sources, panels):
            print(f"[{name}] {source!r} -> {''.join(t for t in tgt if not t.startswith('['))!r}")


if __name__ == "__main__":  # python -m ...: the command line's error handling (one line; --debug)
    from .cli import main as cli_main

    sys.exit(cli_main(["plot-alignment", *sys.argv[1:]]))
