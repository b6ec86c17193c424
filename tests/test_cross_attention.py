"""Cross-attention of the GPT-2 family (dense and Bahdanau's additive alignment) inside
``transformers.EncoderDecoderModel``: the fast paths against the written-out reference (forward and
gradients, padded encoder rows), cached decoding against the full forward pass, the attention
weights ``output_attentions`` returns, config checks, and save / load in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hub_helpers import run_without_package
from transformers import EncoderDecoderModel

import hf_attn_variants as hv
from hf_attn_variants.hfav_cross_attention import GPT2CrossAttention, cross_attention_reference

CROSS = list(hv.CROSS_ATTENTION_VARIANTS)
SELF = ["dense", "band", "additive", "lstmn"]  # the decoder's self-attention under the cross-attention
VOCAB, BOS, EOS, PAD = 41, 1, 2, 0


def encoder_decoder(cross: str, self_variant: str = "dense", seed: int = 0, hidden: int = 32) -> EncoderDecoderModel:
    torch.manual_seed(seed)
    encoder = hv.VariantBertModel(hv.VariantBertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        pad_token_id=PAD, attention_variant="band", attention_window=3), add_pooling_layer=False)
    decoder = hv.VariantGPT2LMHeadModel(hv.VariantGPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=2, n_head=4, n_positions=64, add_cross_attention=True,
        is_decoder=True, cross_attention_variant=cross, attention_variant=self_variant, attention_window=2,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = BOS, PAD, EOS
    return model


def encoder_batch(batch: int = 3, length: int = 9, seed: int = 1):
    """Token ids and a right-padded mask (rows of length, length - 3, 4)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    lengths = torch.tensor([length, length - 3, 4][:batch])
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


# ----------------------------------------------------------------------------- the module vs its reference

def cross_module(variant: str, seed: int = 0) -> GPT2CrossAttention:
    config = hv.VariantGPT2Config(n_embd=24, n_layer=1, n_head=3, add_cross_attention=True,
                                  cross_attention_variant=variant, additive_dim=5, attn_pdrop=0.0, resid_pdrop=0.0)
    torch.manual_seed(seed)
    module = GPT2CrossAttention(config, 0).double()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module


@pytest.mark.parametrize("direct", [True, False], ids=["one-tensor", "tiled-kernel"])
@pytest.mark.parametrize("variant", CROSS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference_forward_and_gradients(variant, seed, direct):
    """Random shapes and random right padding of the encoder: the fast path (for additive: one tensor,
    or the tiled kernel per group of equal lengths) equals the reference, outputs and all gradients."""
    g = torch.Generator().manual_seed(seed)
    batch, tq, tk = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((2, 5), (1, 8), (3, 12)))
    module = cross_module(variant, seed)
    module.direct_budget = 1 << 30 if direct else 0
    x = torch.randn(batch, tq, 24, generator=g, dtype=torch.float64, requires_grad=True)
    enc = torch.randn(batch, tk, 24, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, tk + 1, (batch,), generator=g)
    lengths[0] = tk
    key_mask = torch.arange(tk)[None] < lengths[:, None]
    results = []
    for need_weights in (False, True):
        out, weights = module(x, enc, key_mask, need_weights=need_weights)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
        grads = torch.autograd.grad(loss, [x, enc, *module.parameters()], allow_unused=True,
                                    materialize_grads=True)  # mean: no gradient to queries/keys
        results.append((out, grads, weights))
    (fast, fast_grads, none), (ref, ref_grads, weights) = results
    assert none is None and weights.shape == (batch, 3, tq, tk)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    assert float(enc.detach().abs().sum()) > 0 and float(fast.detach().abs().max()) > 1e-3  # nothing trivially zero


@pytest.mark.parametrize("variant", CROSS)
def test_padded_encoder_tokens_are_never_read(variant):
    module = cross_module(variant)
    g = torch.Generator().manual_seed(3)
    x, enc = torch.randn(2, 4, 24, generator=g, dtype=torch.float64), torch.randn(2, 7, 24, generator=g,
                                                                                 dtype=torch.float64)
    key_mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    for budget in (1 << 30, 0):
        module.direct_budget = budget
        out, weights = module(x, enc, key_mask, need_weights=True)
        assert float(weights[1, ..., 3:].abs().max()) == 0.0
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
        changed = enc.clone()
        changed[1, 3:] = torch.randn(4, 24, generator=g, dtype=torch.float64) * 10
        fast, again = module(x, enc, key_mask)[0], module(x, changed, key_mask)[0]
        torch.testing.assert_close(fast, again, rtol=0, atol=1e-12)


def test_reference_is_bahdanau_alignment_model():
    """e_ij = v_hᵀ tanh(W_q y_i + U h_j) for one (i, j, head), written with plain loops."""
    module = cross_module("additive")
    g = torch.Generator().manual_seed(5)
    y, h = torch.randn(1, 2, 24, generator=g, dtype=torch.float64), torch.randn(1, 3, 24, generator=g,
                                                                              dtype=torch.float64)
    q = module.split_heads(module.q_attn(y))
    k, v = module.encoder_keys_values(h, None)
    scores = cross_attention_reference(q, k, v, scoring="additive", score_vector=module.score_vector)[2]
    w_q, b_q = module.q_attn.weight, module.q_attn.bias  # Conv1D: x @ W + b, W (in, out)
    w_k, b_k = module.c_attn.weight[:, :15], module.c_attn.bias[:15]
    for head in range(3):
        cols = slice(5 * head, 5 * head + 5)
        for i in range(2):
            for j in range(3):
                e = module.score_vector[head] @ torch.tanh(y[0, i] @ w_q[:, cols] + b_q[cols]
                                                           + h[0, j] @ w_k[:, cols] + b_k[cols])
                torch.testing.assert_close(scores[0, head, i, j], e)


def test_mean_reads_a_fixed_summary_of_the_encoder():
    """``mean`` (the RNNenc baseline): every decoder position reads the same vector, the average of the
    value projections of the real encoder tokens, written here as a plain loop; the queries do not matter."""
    module = cross_module("mean")
    g = torch.Generator().manual_seed(6)
    x, enc = torch.randn(2, 4, 24, generator=g, dtype=torch.float64), torch.randn(2, 6, 24, generator=g,
                                                                                 dtype=torch.float64)
    key_mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    out, weights = module(x, enc, key_mask, need_weights=True)
    again = module(torch.randn(2, 4, 24, generator=g, dtype=torch.float64), enc, key_mask)[0]
    torch.testing.assert_close(out, again, rtol=0, atol=1e-12)  # the same for any decoder input
    torch.testing.assert_close(out[:, 0], out[:, 3], rtol=0, atol=1e-12)  # and at every position
    k, v = module.encoder_keys_values(enc, None)  # v (B, H, S, D)
    for b, n in ((0, 6), (1, 2)):
        mean = sum(v[b, :, j] for j in range(n)) / n  # (H, D)
        expected = module.c_proj(mean.reshape(1, -1))[0]
        torch.testing.assert_close(out[b, 2], expected)
        torch.testing.assert_close(weights[b, :, :, :n], torch.full_like(weights[b, :, :, :n], 1 / n))
    assert float(out.abs().max()) > 1e-3


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("cross", CROSS)
def test_output_attentions_returns_cross_attention_weights(cross):
    model = encoder_decoder(cross)
    ids, mask = encoder_batch()
    labels = torch.randint(3, VOCAB, (3, 5))
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_attentions=True)
    assert len(out.cross_attentions) == 2
    for weights in out.cross_attentions:
        assert weights.shape == (3, 4, 5, 9)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5))
        assert float(weights[2, ..., 4:].abs().max()) == 0.0  # row 2 has 4 real encoder tokens
    plain = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert plain.cross_attentions is None
    torch.testing.assert_close(out.logits, plain.logits, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out.loss) and float(out.loss) > 0


@pytest.mark.parametrize("self_variant", SELF)
@pytest.mark.parametrize("cross", CROSS)
def test_cached_decoding_equals_full_forward(cross, self_variant):
    """Token by token with the cache (encoder keys projected once) gives the full forward's logits."""
    model = encoder_decoder(cross, self_variant)
    ids, mask = encoder_batch()
    targets = torch.randint(3, VOCAB, (3, 6), generator=torch.Generator().manual_seed(7))
    targets[:, 0] = BOS
    with torch.no_grad():
        encoder_out = model.encoder(input_ids=ids, attention_mask=mask)
        full = model(encoder_outputs=encoder_out, attention_mask=mask, decoder_input_ids=targets).logits
        calls = []
        for block in model.decoder.transformer.h:
            block.crossattention.c_attn.register_forward_hook(lambda *a: calls.append(1))
        cache, steps = None, []
        for t in range(targets.shape[1]):
            out = model(encoder_outputs=encoder_out, attention_mask=mask, decoder_input_ids=targets[:, t:t + 1],
                        cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert isinstance(cache, hv.modeling_gpt2_variants.VariantCache)
    assert len(calls) == 2, "the encoder keys/values were projected more than once per layer"
    assert cache.layers[0]["cross_k"].shape[:3] == (3, 4, 9)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cross", CROSS)
def test_generate_with_cache_equals_without(cross):
    model = encoder_decoder(cross, "band", seed=3)
    ids, mask = encoder_batch()
    cached = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    uncached = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert (cached[:, 0] == BOS).all() and cached.shape[1] > 1
    beams = model.generate(ids, attention_mask=mask, max_new_tokens=5, num_beams=3, do_sample=False)
    assert beams.shape[0] == 3


def test_a_fresh_decoder_draws_the_additive_score_vector():
    decoder = encoder_decoder("additive").decoder
    vectors = [p for n, p in decoder.named_parameters() if n.endswith("score_vector")]
    assert len(vectors) == 2 and all(bool(p.ne(0).all()) for p in vectors)  # one v_h per layer, drawn at init


def test_config_checks_name_field_and_value():
    with pytest.raises(ValueError, match="cross_attention_variant='band'"):
        hv.VariantGPT2Config(n_embd=16, n_head=2, add_cross_attention=True, cross_attention_variant="band")
    with pytest.raises(ValueError, match="add_cross_attention=True"):
        hv.VariantBertConfig(hidden_size=16, num_attention_heads=2, add_cross_attention=True)
    config = hv.VariantGPT2Config(n_embd=16, n_head=2, n_layer=1, add_cross_attention=True)
    assert config.cross_attention_variant == "dense"
    model = hv.VariantGPT2LMHeadModel(config)
    with pytest.raises(ValueError, match="encoder_hidden_states is None"):
        model(input_ids=torch.tensor([[3, 4]]))


def test_stock_gpt2_cross_attention_weights_load():
    """Storage as stock GPT-2 (q_attn, c_attn, c_proj, ln_cross_attn): a stock checkpoint loads, nothing missing."""
    from transformers import GPT2Config, GPT2LMHeadModel

    stock = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=1, vocab_size=30, add_cross_attention=True))
    ours = hv.VariantGPT2LMHeadModel(hv.VariantGPT2Config(n_embd=16, n_head=2, n_layer=1, vocab_size=30,
                                                          add_cross_attention=True))
    missing, unexpected = ours.load_state_dict(stock.state_dict(), strict=False)
    assert missing == [] and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in unexpected)


# ----------------------------------------------------------------------------- saving and loading


def test_save_load_round_trip_in_a_fresh_interpreter(tmp_path):
    """EncoderDecoderModel.save_pretrained / from_pretrained (the package imported, which registers the
    families), in a new interpreter: same logits and same greedy output."""
    model = encoder_decoder("additive", "band")
    ids, mask = encoder_batch()
    targets = torch.tensor([[BOS, 5, 6, 7]] * 3)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    model.save_pretrained(tmp_path / "ed")
    torch.save({"ids": ids, "mask": mask, "targets": targets}, tmp_path / "inputs.pt")
    script = textwrap.dedent(f'''
        import json, torch
        import hf_attn_variants
        from transformers import EncoderDecoderModel
        torch.set_num_threads(1)
        model = EncoderDecoderModel.from_pretrained({str(tmp_path / "ed")!r}).eval()
        x = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            logits = model(input_ids=x["ids"], attention_mask=x["mask"], decoder_input_ids=x["targets"]).logits
        generated = model.generate(x["ids"], attention_mask=x["mask"], max_new_tokens=6, do_sample=False)
        print(json.dumps({{"logits": logits.tolist(), "generated": generated.tolist(),
                          "cross": model.decoder.config.cross_attention_variant}}))
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cross"] == "additive"
    torch.testing.assert_close(torch.tensor(report["logits"]), logits, rtol=1e-5, atol=1e-5)
    assert report["generated"] == generated.tolist()


def test_encoder_and_decoder_hub_folders_load_without_the_package(tmp_path):
    """Each half saved as a Hub folder (code copied, auto_map): a fresh interpreter where
    hf_attn_variants cannot be imported rebuilds the EncoderDecoderModel with trust_remote_code
    (registering the two remote config classes with AutoConfig, which EncoderDecoderConfig needs)."""
    model = encoder_decoder("additive")
    ids, mask = encoder_batch()
    targets = torch.tensor([[BOS, 5, 6, 7]] * 3)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits
    model.encoder.save_pretrained(tmp_path / "encoder")
    model.decoder.save_pretrained(tmp_path / "decoder")
    assert (tmp_path / "decoder" / "hfav_cross_attention.py").is_file()
    (tmp_path / "inputs.json").write_text(json.dumps({"ids": ids.tolist(), "mask": mask.tolist(),
                                                      "targets": targets.tolist()}))
    report = run_without_package('''
        import json, torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, EncoderDecoderModel
        torch.set_num_threads(1)
        encoder = AutoModel.from_pretrained("encoder", trust_remote_code=True)
        decoder = AutoModelForCausalLM.from_pretrained("decoder", trust_remote_code=True)
        for half in (encoder, decoder):  # EncoderDecoderConfig rebuilds its sub-configs through AutoConfig
            AutoConfig.register(half.config.model_type, type(half.config), exist_ok=True)
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
        x = {k: torch.tensor(v) for k, v in json.loads(open("inputs.json").read()).items()}
        with torch.no_grad():
            out = model(input_ids=x["ids"], attention_mask=x["mask"], decoder_input_ids=x["targets"],
                        output_attentions=True)
        open("report.json", "w").write(json.dumps({"logits": out.logits.tolist(),
                                                   "module": type(decoder).__module__,
                                                   "cross_shape": list(out.cross_attentions[0].shape)}))
    ''', tmp_path)
    assert report["leaked"] == [] and report["module"].startswith("transformers_modules.")
    assert report["cross_shape"] == [3, 4, 4, 9]
    torch.testing.assert_close(torch.tensor(report["logits"]), logits, rtol=1e-5, atol=1e-5)
