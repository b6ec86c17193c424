"""Ranks, rollout, head importance and the command line of hf_attn_variants.analysis."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

import hf_attn_variants as hv
from hf_attn_variants.analysis.importance import (
    HeadIntervention,
    gradient_importance,
    pruning_curve,
    uniform_replacement_delta,
)
from hf_attn_variants.analysis.rank import attention_ranks, bilinear_ranks, spectrum_ranks
from hf_attn_variants.analysis.rollout import rollout

T = 6


# ----------------------------------------------------------------------------- ranks

def test_spectrum_ranks_known_values():
    r = spectrum_ranks(torch.tensor([3.0, 4.0, 0.0]))  # energies 16, 9, 0 of 25
    assert r["energy90"].item() == 2 and r["energy99"].item() == 2
    assert r["stable"].item() == pytest.approx(25 / 16)
    p = torch.tensor([4 / 7, 3 / 7])
    assert r["entropy"].item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_attention_ranks_diagonal_uniform_rank1_band():
    eye = torch.eye(T)[None, None]
    r = attention_ranks(eye)
    for m in ("energy99", "stable", "entropy"):
        assert r[m].item() == pytest.approx(1.0)  # full rank: T / T
    uniform = torch.full((1, 1, T, T), 1.0 / T)  # rank 1
    r = attention_ranks(uniform)
    for m in ("energy90", "energy99", "stable", "entropy"):
        assert r[m].item() == pytest.approx(1.0 / T, rel=1e-5)
    u, v = torch.rand(T), torch.rand(T)
    r = attention_ranks(torch.outer(u, v)[None, None])  # any rank-1 matrix
    assert r["energy99"].item() == pytest.approx(1.0 / T) and r["stable"].item() == pytest.approx(1.0 / T, rel=1e-5)
    band = (torch.arange(T)[:, None] - torch.arange(T)[None]).abs() <= 1
    r = attention_ranks((band / band.sum(-1, keepdim=True))[None, None].float())
    assert 1.0 / T < r["stable"].item() < 1.0


def test_attention_ranks_drop_padding():
    a = torch.zeros(1, 1, T, T)
    a[0, 0, :3, :3] = torch.eye(3)
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, :3] = True
    assert attention_ranks(a, mask)["energy99"].item() == pytest.approx(1.0)  # 3 of 3 real tokens


def test_bilinear_ranks_of_low_rank_model_equal_r():
    cfg = hv.VariantBertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, attention_variant="low_rank", attention_rank=3)
    torch.manual_seed(0)
    module = hv.VariantBertModel(cfg).encoder.layer[0].attention.self
    ranks, spectra = bilinear_ranks(module)
    assert spectra.shape == (2, 3)
    assert (ranks["energy99"] <= 3).all() and (ranks["entropy"] <= 3 + 1e-4).all()


# ----------------------------------------------------------------------------- rollout

def test_rollout_two_layer_by_hand():
    a1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # every token looks at token 0
    a2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # every token looks at token 1
    # two heads per layer, the second uniform: head mean = (a + 0.5) / 2
    att = [torch.stack([a, torch.full((2, 2), 0.5)])[None] for a in (a1, a2)]
    r = rollout(att)
    # layer 1: 0.5 * [[.75,.25],[.75,.25]] + 0.5 I = [[.875,.125],[.375,.625]]
    # layer 2: 0.5 * [[.25,.75],[.25,.75]] + 0.5 I = [[.625,.375],[.125,.875]]
    expected = torch.tensor([[0.625, 0.375], [0.125, 0.875]]) @ torch.tensor([[0.875, 0.125], [0.375, 0.625]])
    assert torch.allclose(r[-1, 0], expected)
    assert torch.allclose(r[0, 0], torch.tensor([[0.875, 0.125], [0.375, 0.625]]))
    assert torch.allclose(r[-1, 0].sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="residual"):
        rollout(att, residual=2.0)


# ----------------------------------------------------------------------------- importance

def _tiny(family: str, variant: str = "dense"):
    torch.manual_seed(0)
    if family == "bert":
        cfg = hv.VariantBertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, attention_variant=variant, attention_window=2,
                                   initializer_range=0.3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return hv.VariantBertModel(cfg).eval()
    cfg = hv.VariantGPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                               attention_variant=variant, attention_window=2, initializer_range=0.3,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return hv.VariantGPT2Model(cfg).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


_PROBE = torch.randn(32, generator=torch.Generator().manual_seed(2))


def _loss(m, b):
    """Per example; a fixed random readout (LayerNorm makes sums and mean squares constant)."""
    h = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    return (h[:, 0] @ _PROBE).sin() + (h[:, -1] @ _PROBE) ** 2 / 32


def _zero_head_output(model, family, layer, head):
    """Make a head provably irrelevant: zero its slice of the output projection's input weights."""
    with torch.no_grad():
        if family == "bert":
            w = model.encoder.layer[layer].attention.output.dense.weight  # (out, in)
            w[:, head * 8:(head + 1) * 8] = 0
        else:
            w = model.h[layer].attn.c_proj.weight  # Conv1D (in, out)
            w[head * 8:(head + 1) * 8] = 0


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_importance_irrelevant_head_scores_zero(family):
    model = _tiny(family)
    _zero_head_output(model, family, 1, 2)
    batches = [_batch()]
    grad = gradient_importance(model, batches, _loss)
    assert grad.shape == (2, 4)
    assert grad[1, 2].item() == pytest.approx(0.0, abs=1e-7)
    assert (grad.flatten()[torch.arange(8) != 6] > 1e-6).all()
    base, delta = uniform_replacement_delta(model, batches, _loss)
    assert delta[1, 2].item() == pytest.approx(0.0, abs=1e-9)
    assert (delta.flatten()[torch.arange(8) != 6].abs() > 1e-5).all()
    curve = pruning_curve(model, batches, lambda m, bs: -float(_loss(m, bs[0]).mean()), grad, [8, 7, 0])
    assert curve[0]["metric"] == pytest.approx(curve[1]["metric"], abs=1e-6)  # pruning the irrelevant head first
    assert curve[2]["metric"] != pytest.approx(curve[0]["metric"], abs=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_uniform_replacement_equals_uniform_attention(family):
    """A head replaced by the hook equals that head computing uniform attention over visible keys."""
    model = _tiny(family)
    b = _batch()
    ref = model(**b).last_hidden_state
    with HeadIntervention(model) as hi:
        hi.gates = torch.ones(2, 1, 4)
        assert torch.allclose(model(**b).last_hidden_state, ref, atol=1e-6)  # gates of 1 change nothing
        hi.uniform = torch.ones(2, 4, dtype=torch.bool)
        hi.key_mask = b["attention_mask"]
        out = model(**b).last_hidden_state
    # the same by zeroing the queries: dot-product scores 0 -> uniform softmax over visible keys
    for layer in (model.encoder.layer if family == "bert" else model.h):
        attn = layer.attention.self if family == "bert" else layer.attn
        with torch.no_grad():
            if family == "bert":
                attn.query.weight.zero_()
                attn.query.bias.zero_()
            else:
                attn.c_attn.weight[:, :32].zero_()
                attn.c_attn.bias[:32].zero_()
    expected = model(**b).last_hidden_state
    real = b["attention_mask"].bool()
    assert torch.allclose(out[real], expected[real], atol=1e-5)


# ----------------------------------------------------------------------------- CLI end to end

@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat on mat a dog ran far away and then home".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    texts = folder / "texts.txt"
    texts.write_text("the cat sat on the mat\na dog ran far away\nthe dog ran home and then the cat sat\n")
    return folder, texts


def test_cli_analyze_end_to_end(tiny_saved, tmp_path):
    from hf_attn_variants_research.cli import main

    folder, texts = tiny_saved
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--texts", str(texts), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_texts"] == 3
    import csv

    rows = list(csv.DictReader(open(out / "heads.csv")))
    assert len(rows) == 3 * 2 * 4  # conditions x layers x heads
    assert {r["condition"] for r in rows} == {"model", "random_init", "shuffled"}
    assert all(0.0 <= float(r["sink_mass"]) <= 1.0 for r in rows)
    imp = list(csv.DictReader(open(out / "importance.csv")))
    assert len(imp) == 8 and any(float(r["grad_importance"]) > 0 for r in imp)
    for png in ("head_maps.png", "locality_vs_rank.png", "attention_heatmaps.png", "bilinear_spectra.png",
                "pruning_curve.png", "importance_maps.png"):
        data = (out / png).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", png


def test_cli_convert_prints_energy(tiny_saved, tmp_path, capsys):
    from hf_attn_variants_research.cli import main

    folder, _ = tiny_saved
    out = tmp_path / "lr"
    assert main(["convert", str(folder), "--variant", "low_rank", "--rank", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SVD energy kept at r=2" in printed and "layer 1:" in printed
    energy = json.loads((out / "svd_energy.json").read_text())["energy_kept"]
    assert len(energy) == 8 and all(0 < e["energy_kept"] < 1 for e in energy)
    model = transformers.AutoModel.from_pretrained(out, trust_remote_code=True)
    assert model.config.attention_variant == "low_rank" and model.config.attention_rank == 2


def test_cli_errors():
    from hf_attn_variants_research.cli import COMMANDS, main, resolve

    assert COMMANDS["view"][0] == "hf_attn_variants.analysis.viewer:main"
    with pytest.raises(SystemExit, match="unknown command"):
        main(["nope"])
    try:
        import hf_attn_variants.analysis.viewer  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(SystemExit, match="no hf_attn_variants.analysis.viewer"):
            resolve("view")
