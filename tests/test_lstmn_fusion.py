"""LSTMN fusion (Cheng et al. 2016, section 4): the recurrence (the package's one LSTMN step with the
inter-attention read) against the equations written out one sequence at a time (forward and gradients,
padding on both sides, shallow and deep), the intra-only path against the fast scan
``kernels.lstmn_scan`` (the package's second LSTMN implementation), the pair split, the model's padding
invariance and attention outputs, config checks, and loading from a Hub folder in a fresh interpreter
without the package."""

from __future__ import annotations

import json

import pytest
import torch
from hub_helpers import bert_tokenizer, run_without_package

import hf_attn_variants as hv
from hf_attn_variants.hfav_kernels import lstmn_scan
from hf_attn_variants.modeling_lstmn_fusion import fusion_scan, split_pair

FUSIONS = list(hv.FUSIONS)


def fusion_model(fusion: str, seed: int = 0, hidden: int = 12, dtype=torch.float64):
    torch.manual_seed(seed)
    model = hv.LSTMNFusionForSequenceClassification(hv.LSTMNFusionConfig(
        vocab_size=100, hidden_size=hidden, fusion=fusion, num_labels=3, dropout=0.0)).to(dtype).eval()
    for p in model.parameters():  # larger than the init, so that attention is far from uniform
        torch.nn.init.normal_(p, std=0.4)
    return model


def written_out(cell, x, key_mask=None, inter=None, source=None, source_mask=None) -> dict:
    """The fusion equations (module docstring of modeling_lstmn_fusion) for one sequence at a time, step
    by step, every projection recomputed from the tapes at each step (lists of vectors, nothing shared
    with the package's step)."""
    outs = {"h": [], "c": [], "g": []}
    d = cell.hidden_size
    for b in range(x.shape[0]):
        tape_h, tape_c, readable = [x.new_zeros(d)], [x.new_zeros(d)], [True]
        h_sum, g_sum = x.new_zeros(d), x.new_zeros(d)
        hs, cs, gs = [], [], []
        for t in range(x.shape[1]):
            x_t = x[b, t]
            a = torch.stack([cell.score @ torch.tanh(cell.w_tape(h_i) + cell.w_input(x_t) + cell.w_summary(h_sum))
                             for h_i in tape_h])
            s = torch.softmax(a.masked_fill(~torch.tensor(readable), float("-inf")), dim=0)
            h_sum = sum(s_i * h_i for s_i, h_i in zip(s, tape_h))
            c_sum = sum(s_i * c_i for s_i, c_i in zip(s, tape_c))
            i, f, o, c_hat = cell.gates(torch.cat([h_sum, x_t])).chunk(4)
            c = torch.sigmoid(f) * c_sum + torch.sigmoid(i) * torch.tanh(c_hat)
            if source is not None:
                real = [j for j in range(source[0].shape[1]) if source_mask is None or bool(source_mask[b, j])]
                bj = torch.stack([inter.score @ torch.tanh(inter.w_source(source[0][b, j]) + inter.w_input(x_t)
                                                           + inter.w_summary(g_sum)) for j in real])
                p = torch.softmax(bj, dim=0)
                g_sum = sum(p_j * source[0][b, j] for p_j, j in zip(p, real))
                gs.append(g_sum)
                if hasattr(inter, "fuse"):  # deep: c_t = r_t ⊙ α̃_t + f_t ⊙ c̃_t + i_t ⊙ ĉ_t
                    a_sum = sum(p_j * source[1][b, j] for p_j, j in zip(p, real))
                    c = torch.sigmoid(inter.fuse(torch.cat([g_sum, x_t]))) * a_sum + c
            h = torch.sigmoid(o) * torch.tanh(c)
            tape_h.append(h)
            tape_c.append(c)
            readable.append(True if key_mask is None else bool(key_mask[b, t]))
            hs.append(h)
            cs.append(c)
        outs["h"].append(torch.stack(hs))
        outs["c"].append(torch.stack(cs))
        if gs:
            outs["g"].append(torch.stack(gs))
    return {k: torch.stack(v) if v else None for k, v in outs.items()}


def padded(batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    return torch.arange(length)[None] < lengths[:, None]


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_fusion_scan_matches_the_equations_written_out(fusion, seed):
    model = fusion_model(fusion, seed)
    cell, inter = model.fusion.hypothesis_cell, model.fusion.inter
    g = torch.Generator().manual_seed(seed)
    batch, t, s = 3, int(torch.randint(2, 7, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g))
    x = torch.randn(batch, t, 12, generator=g, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(batch, s, 12, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(batch, s, 12, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask, source_mask = padded(batch, t, g), padded(batch, s, g)
    results = []
    for fn in (fusion_scan, written_out):
        out = fn(cell, x, key_mask, inter, (gamma, alpha), source_mask)
        valid = key_mask[..., None]  # steps past a row's end are never read
        loss = ((out["h"] * valid).sum() * 0.7 + (out["c"] * valid).sum() * 0.2 - (out["g"] * valid).sum() * 0.5)
        inputs = [x, gamma, alpha, *cell.parameters(), *inter.parameters()]
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)  # shallow fusion never reads α
        results.append((out, [torch.zeros_like(i) if d is None else d for i, d in zip(inputs, grads)]))
    (fast, fast_grads), (ref, ref_grads) = results
    for key in ("h", "c", "g"):
        torch.testing.assert_close(fast[key] * key_mask[..., None], ref[key] * key_mask[..., None])
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert float(fast_grads[2].abs().max()) > 0 if fusion == "deep" else float(fast_grads[2].abs().max()) == 0


def test_without_a_source_it_is_the_fast_lstmn_scan():
    """The premise side (no inter-attention) against the package's second LSTMN implementation, the fast
    scan with its hand-written backward: outputs and gradients (weights and inputs), with padding."""
    model = fusion_model("shallow")
    cell = model.fusion.premise_cell
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 12, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = padded(3, 6, g)
    results = []
    for fn in (lambda: fusion_scan(cell, x, key_mask)["h"], lambda: lstmn_scan(cell, x, key_mask)[0]):
        h = fn()
        loss = (h * key_mask[..., None]).pow(2).sum()
        results.append((h, torch.autograd.grad(loss, [x, *cell.parameters()])))
    (h, grads), (h_scan, grads_scan) = results
    torch.testing.assert_close(h * key_mask[..., None], h_scan * key_mask[..., None])
    for a, b in zip(grads, grads_scan):
        torch.testing.assert_close(a, b)
    out = fusion_scan(cell, x.detach(), key_mask, need_weights=True)
    assert torch.allclose(out["intra"].sum(-1), torch.ones(3, 6, dtype=torch.float64))  # rows over [zero slot, tokens]


def test_split_pair_against_a_loop():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (4, 11), generator=g)
    types = torch.zeros_like(ids)
    mask = torch.ones_like(ids)
    for row, (p, h) in enumerate([(5, 6), (3, 4), (2, 2), (6, 3)]):  # premise, hypothesis, then padding
        types[row, p:p + h] = 1
        mask[row, p + h:] = 0
    p_ids, p_mask, h_ids, h_mask = split_pair(ids, mask, types)
    for row in range(4):
        premise = [int(t) for t, ty, m in zip(ids[row], types[row], mask[row]) if m and ty == 0]
        hypothesis = [int(t) for t, ty, m in zip(ids[row], types[row], mask[row]) if m and ty == 1]
        assert p_ids[row][p_mask[row]].tolist() == premise and h_ids[row][h_mask[row]].tolist() == hypothesis
    with pytest.raises(ValueError, match="token_type_ids is None"):
        split_pair(ids, mask, None)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_model_ignores_padding_and_returns_its_attentions(fusion):
    model = fusion_model(fusion, hidden=16, dtype=torch.float32)
    tok = bert_tokenizer()
    pairs = [("the cat sat on the mat", "a cat sat"), ("the dog ran in the park at dawn", "my dog ran")]
    batch = tok([p for p, _ in pairs], [h for _, h in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
        alone = torch.cat([model(**tok(p, h, return_tensors="pt")).logits for p, h in pairs])
    torch.testing.assert_close(out.logits, alone, rtol=1e-5, atol=1e-5)
    premise_intra, hypothesis_intra, inter = out.attentions
    assert inter.shape[:2] == (2, 1) and inter.shape[-1] == premise_intra.shape[-1]
    torch.testing.assert_close(inter[1, 0].sum(-1), torch.ones(inter.shape[2]))
    n_premise_0 = int(((batch["token_type_ids"][0] == 0) & (batch["attention_mask"][0] == 1)).sum())
    assert float(inter[0, 0, :, n_premise_0:].abs().max()) == 0.0  # row 0's premise is shorter than row 1's
    assert float(out.logits.std()) > 0


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_fresh_model_draws_every_score_vector(fusion):
    """v of both intra-attention cells and u of the inter-attention are drawn at init (never left at
    their constructors' zeros, or, before, uninitialised memory)."""
    torch.manual_seed(0)
    model = hv.LSTMNFusionForSequenceClassification(hv.LSTMNFusionConfig(fusion=fusion, hidden_size=8))
    scores = [p for n, p in model.named_parameters() if n.endswith("score")]
    assert len(scores) == 3  # v of the premise and hypothesis cells, u of the inter-attention
    assert all(bool(torch.isfinite(p).all()) and bool(p.ne(0).all()) for p in scores)


def test_config_checks_name_field_and_value():
    with pytest.raises(ValueError, match="fusion='wide'"):
        hv.LSTMNFusionConfig(fusion="wide")
    with pytest.raises(ValueError, match="hidden_size=0"):
        hv.LSTMNFusionConfig(hidden_size=0)
    with pytest.raises(ValueError, match="dropout=1.5"):
        hv.LSTMNFusionConfig(dropout=1.5)


def test_auto_classes_and_hub_folder_in_a_fresh_interpreter(tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = fusion_model("deep", hidden=16, dtype=torch.float32)
    assert type(AutoModelForSequenceClassification.from_config(model.config)) is type(model)
    tok = bert_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_lstmn_fusion.LSTMNFusionForSequenceClassification"
    assert {"modeling_lstmn_fusion.py", "configuration_lstmn_fusion.py", "hfav_attention.py", "hfav_kernels.py"} <= {
        p.name for p in tmp_path.glob("*.py")}
    assert AutoConfig.from_pretrained(tmp_path).fusion == "deep"
    batch = tok(["the cat sat on the mat"], ["a dog ran"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    report = run_without_package('''
        import json, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        torch.set_num_threads(1)
        model = AutoModelForSequenceClassification.from_pretrained(".", trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained(".")
        with torch.no_grad():
            logits = model(**tok(["the cat sat on the mat"], ["a dog ran"], return_tensors="pt")).logits
        open("report.json", "w").write(json.dumps({"logits": logits.tolist(), "module": type(model).__module__}))
    ''', tmp_path)
    assert report["leaked"] == [] and report["module"].startswith("transformers_modules.")
    torch.testing.assert_close(torch.tensor(report["logits"]), logits, rtol=1e-5, atol=1e-5)
