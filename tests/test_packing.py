"""Padding-free packing (several sequences in one row, ``position_ids`` restarting at each, as transformers'
``DataCollatorWithFlattening`` builds them) equals the padded batch for every variant of the registry and both
families: each packed sequence attends as its own row (``hfav_packing.Packing``), so band windows, global
tokens (the first g tokens of each sequence) and LSTMN tapes start at each sequence. Refused with a cache;
left padding's positions are not mistaken for packing."""

from __future__ import annotations

import tempfile

import pytest
import torch
from conftest import HEAD_CLASSES, random_batch, tiny_model

import hf_attn_variants as hv
from hf_attn_variants.hfav_caching import VariantCache
from hf_attn_variants.hfav_packing import packed_starts, packing_of


def packed_from(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed row of a padded batch: real (B, T) bool and position_ids (1, N_real) = cat(arange(len_i))."""
    real = mask.bool()
    positions = torch.cat([torch.arange(int(n)) for n in real.sum(1)])[None]
    return real, positions


def no_cache(family: str) -> dict:
    return {"use_cache": False} if family == "gpt2" else {}


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_equals_padded_with_gradients(family, case, seed):
    """fp32: the real tokens' outputs, and the gradients of a random projection of them w.r.t. the input
    embeddings and every parameter, are those of the right-padded batch."""
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(4, 9, "right", seed=seed)
    real, positions = packed_from(mask)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    padded = model(inputs_embeds=embeds, attention_mask=mask, **no_cache(family)).last_hidden_state[real]
    packed = model(inputs_embeds=embeds[real][None], position_ids=positions, **no_cache(family)).last_hidden_state[0]
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    probe = torch.randn(padded.shape, generator=torch.Generator().manual_seed(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    grads_padded = torch.autograd.grad((padded * probe).sum(), [embeds, *params], allow_unused=True)
    grads_packed = torch.autograd.grad((packed * probe).sum(), [embeds, *params], allow_unused=True)
    torch.testing.assert_close(grads_packed[0][real], grads_padded[0][real], atol=1e-5, rtol=1e-5)
    assert grads_packed[0][real].abs().sum() > 0
    for (name, _), g_packed, g_padded in zip(model.named_parameters(), grads_packed[1:], grads_padded[1:]):
        if g_padded is None:
            assert g_packed is None or not g_packed.any(), name
            continue  # (a parameter gradient sums over every token: fp32 order of summation, rtol 1e-4)
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_attention_weights_are_block_diagonal(family, case):
    """output_attentions of a packed row: (1, H, N, N), each sequence's block equal to its padded row's
    weights, zero between sequences; the hidden states recorded in the packed layout."""
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(3, 7, "right", seed=5)
    real, positions = packed_from(mask)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, output_attentions=True, **no_cache(family))
        packed = model(input_ids=ids[real][None], position_ids=positions, output_attentions=True,
                       output_hidden_states=True, **no_cache(family))
    total = int(real.sum())
    assert len(packed.attentions) == model.config.num_hidden_layers
    assert all(h.shape == (1, total, model.config.hidden_size) for h in packed.hidden_states)
    for ours, reference in zip(packed.attentions, padded.attentions):
        assert ours.shape == (1, reference.shape[1], total, total)
        start, inside = 0, torch.zeros(total, total, dtype=torch.bool)
        for row, n in enumerate(real.sum(1).tolist()):
            block = ours[0, :, start:start + n, start:start + n]
            torch.testing.assert_close(block, reference[row, :, :n, :n], atol=1e-6, rtol=1e-5)
            inside[start:start + n, start:start + n] = True
            start += n
        assert not ours[0][:, ~inside].any()


@pytest.mark.parametrize("variant", ["band", "low_rank_band"])
def test_global_tokens_are_the_first_tokens_of_each_sequence(family, variant):
    """band + attention_global_tokens g: in a packed row, the first g tokens of each sequence are global
    (every later token of that sequence reads them, beyond the window), as when the sequence runs alone."""
    g, window = 2, 1
    model = tiny_model(family, variant, attention_window=window, attention_global_tokens=g)
    lengths = [6, 1, 7]
    ids = torch.randint(1, 97, (1, sum(lengths)), generator=torch.Generator().manual_seed(3))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, output_attentions=True, **no_cache(family))
        start = 0
        for n in lengths:
            alone = model(input_ids=ids[:, start:start + n], output_attentions=True, **no_cache(family))
            torch.testing.assert_close(packed.last_hidden_state[:, start:start + n], alone.last_hidden_state,
                                       atol=1e-5, rtol=1e-5)
            weights = packed.attentions[0][0, :, start:start + n, start:start + n]
            if variant == "band" and n > g + window:  # the last query reads the sequence's global keys, past the window
                assert (weights[:, n - 1, :g] > 0).all()
                assert not weights[:, n - 1, g:n - 1 - window].any()
            start += n


def test_packed_rows_with_padding(family, case):
    """Several packed rows, right-padded to one length with an attention_mask: the padding belongs to no
    sequence and each row splits where its positions restart (equal to the sequences run padded, one a row)."""
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(4, 6, "right", seed=8)
    real, positions = packed_from(mask)
    rows = [(0, 2), (2, 4)]  # sequences 0-1 packed in row 0, sequences 2-3 in row 1
    lengths = real.sum(1).tolist()
    width = max(sum(lengths[a:b]) for a, b in rows) + 1  # at least one padding slot
    packed_ids, packed_pos = torch.zeros(2, width, dtype=torch.long), torch.zeros(2, width, dtype=torch.long)
    packed_mask = torch.zeros(2, width, dtype=torch.long)
    for r, (a, b) in enumerate(rows):
        tokens = torch.cat([ids[i][real[i]] for i in range(a, b)])
        packed_ids[r, :len(tokens)] = tokens
        packed_pos[r, :len(tokens)] = torch.cat([torch.arange(lengths[i]) for i in range(a, b)])
        packed_mask[r, :len(tokens)] = 1
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, **no_cache(family)).last_hidden_state[real]
        packed = model(input_ids=packed_ids, attention_mask=packed_mask, position_ids=packed_pos,
                       **no_cache(family)).last_hidden_state
    torch.testing.assert_close(packed[packed_mask.bool()], padded, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(packed).all()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["dense", "band"])
def test_transformers_padding_matches_padding_free(family, variant, implementation):
    """transformers' ``attention_mask_padding_matches_padding_free_with_position_ids`` on the LM head
    (tests/generation/test_utils.py): a left-padded batch (positions from the mask) against one packed row,
    the model saved and reloaded in bf16, no cache; the logits of the real tokens agree within bf16's eps."""
    cls = HEAD_CLASSES[family][0] if family == "gpt2" else hv.VariantBertLMHeadModel
    model = tiny_model(family, variant, cls=cls)
    ids, mask = random_batch(3, 8, "left", seed=4)
    position_ids = (mask.cumsum(1) - 1) * mask
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        model = cls.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation=implementation).eval()
    real, packed_positions = packed_from(mask)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
        packed = model(input_ids=ids[real][None], position_ids=packed_positions, use_cache=False).logits
    tol = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(padded[real], packed[0], rtol=tol, atol=tol)


def test_dense_custom_4d_block_mask_equals_packing(family):
    """A dense model given the block-diagonal 4-D mask of the sequences (the custom-mask path) agrees with
    padding-free packing by position_ids."""
    model = tiny_model(family, "dense")
    lengths = [4, 3, 5]
    total = sum(lengths)
    ids = torch.randint(1, 97, (1, total), generator=torch.Generator().manual_seed(6))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    allowed = segment[:, None] == segment[None, :]
    if family == "gpt2":
        allowed = allowed & torch.ones(total, total, dtype=torch.bool).tril()
    with torch.no_grad():
        custom = model(input_ids=ids, attention_mask=allowed[None, None], position_ids=positions,
                       **no_cache(family)).last_hidden_state
        packed = model(input_ids=ids, position_ids=positions, **no_cache(family)).last_hidden_state
    torch.testing.assert_close(packed, custom, atol=1e-5, rtol=1e-5)


def test_packing_with_a_cache_is_refused(case):
    """A cache holds one sequence per row: a packed row given a cache, or use_cache=True, is refused with the
    reason; use_cache left to the config (True for GPT-2) packs and returns no cache."""
    variant, fields = case
    model = tiny_model("gpt2", variant, **fields)
    ids = random_batch(1, 9, None, seed=2)[0]
    packed = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1]])
    with pytest.raises(ValueError, match=r"position_ids restart within a row.*with a cache \(use_cache=True\)"):
        model(input_ids=ids, position_ids=packed, use_cache=True)
    with pytest.raises(ValueError, match=r"position_ids restart within a row.*\(cache/past_key_values given\)"):
        model(input_ids=ids, position_ids=packed, past_key_values=VariantCache(config=model.config))
    with torch.no_grad():
        prompt = model(input_ids=ids[:, :4], use_cache=True).cache
    with pytest.raises(ValueError, match="cannot be continued"):
        model(input_ids=ids[:, 4:], position_ids=packed[:, 4:] + 4, cache=prompt)
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=packed)
    assert out.cache is None and torch.isfinite(out.last_hidden_state).all()


def test_padding_positions_are_not_packing(family):
    """Positions that generate() gives left-padded rows (1 on padding, then 0, 1, ...) are no restart."""
    ids, mask = random_batch(2, 6, "left" if family == "gpt2" else "right", seed=3)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    key_mask = mask.bool()
    assert packing_of(positions, key_mask) is None
    starts = packed_starts(positions, key_mask)
    assert starts.sum(1).tolist() == [1, 1]
    model = tiny_model(family, "band")
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    assert torch.isfinite(out).all()


def test_sequence_starts():
    """A sequence starts at a row's first real token and wherever the position does not increase (a
    length-1 sequence included); padding belongs to none."""
    positions = torch.tensor([[0, 0, 1, 2, 0, 1, 5, 5], [7, 8, 0, 9, 1, 0, 3, 4]])
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1, 1, 1]]).bool()
    starts = packed_starts(positions, key_mask)
    assert starts.long().tolist() == [[1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 1, 0, 0]]
    packing = packing_of(positions, key_mask)
    assert packing.valid.sum(1).tolist() == [1, 3, 3, 3, 1, 3]
    x = torch.randn(2, 8, 5)
    torch.testing.assert_close(packing.scatter(packing.gather(x)), x * key_mask[..., None])
