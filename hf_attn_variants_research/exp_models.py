"""Models of the experiment suite: the library's variant models, attention-only stacks and the
non-attention baselines (bag of embeddings, BiLSTM).

``attention_sublayer`` is the one place that reaches into the library's attention modules
(adjust it there if the library's internals move). Not imported by the package.
"""

from __future__ import annotations

import torch
from torch import nn

import hf_attn_variants as hv

BASELINES = ("bag_of_embeddings", "bilstm")


def attention_sublayer(variant: dict, hidden: int, heads: int, layers: int, layer_idx: int) -> nn.Module:
    """One causal attention sublayer of the library (GPT-2 storage: q/k/v projections, variant
    scoring, output projection), with no LayerNorm and no feed-forward around it.

    Returns a module called as ``module(x (B, T, hidden), key_mask or None) -> ((B, T, hidden), weights)``.
    """
    from transformers import initialization

    from hf_attn_variants.hfav_attention import attention_class, init_variant_parameters

    config = hv.VariantGPT2Config(n_embd=hidden, n_head=heads, n_layer=layers, vocab_size=2, attn_pdrop=0.0,
                                  resid_pdrop=0.0, embd_pdrop=0.0, **variant)
    module = attention_class("gpt2", config.variant_for_layer(layer_idx))(config, layer_idx)
    for sub in module.modules():  # the parameters a variant adds, initialised as its spec says (as the models do)
        init_variant_parameters(sub, config.initializer_range, initialization)
    return module


class Readout(nn.Module):
    """Linear readout, or a one-hidden-layer MLP (``mlp=True``) for the binary-label probes."""

    def __init__(self, hidden: int, out: int, mlp: bool):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)) if mlp \
            else nn.Linear(hidden, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ProbeModel(nn.Module):
    """Embeddings (+ learned positions) -> a causal stack -> per-position readout (B, T, out).

    ``architecture``: ``attention_only`` (residual stream plus attention sublayers only, Olsson et
    al. 2022) or ``full`` (the library's VariantGPT2Model: LayerNorm, attention, MLP blocks).
    Inputs are token ids (``vocab`` > 0) or float features (``features`` > 0).
    """

    def __init__(self, model: str, variant: dict, architecture: str, hidden: int, heads: int, layers: int,
                 max_len: int, out: int, vocab: int = 0, features: int = 0, mlp_readout: bool = False):
        super().__init__()
        if architecture not in ("attention_only", "full"):
            raise ValueError(f"architecture={architecture!r} is invalid: expected attention_only or full")
        if model in BASELINES:
            raise ValueError(f"model={model!r}: the probes compare attention variants only")
        fields = {**variant, "attention_variant": model}
        self.embed = nn.Embedding(vocab, hidden) if vocab else nn.Linear(features, hidden)
        self.architecture = architecture
        if architecture == "attention_only":
            self.pos = nn.Embedding(max_len, hidden)
            self.blocks = nn.ModuleList(attention_sublayer(fields, hidden, heads, layers, i) for i in range(layers))
            nn.init.normal_(self.pos.weight, std=0.02)
        else:
            config = hv.VariantGPT2Config(n_embd=hidden, n_head=heads, n_layer=layers, n_positions=max_len,
                                          vocab_size=2, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, **fields)
            self.body = hv.VariantGPT2Model(config)
        self.readout = Readout(hidden, out, mlp_readout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h = self.embed(inputs)
        if self.architecture == "full":
            return self.readout(self.body(inputs_embeds=h).last_hidden_state)
        h = h + self.pos(torch.arange(h.shape[1], device=h.device))
        for block in self.blocks:
            h = h + block(h, None)[0]
        return self.readout(h)


# ----------------------------------------------------------------------------- real tasks

class BagOfEmbeddings(nn.Module):
    """Mean of (token + segment) embeddings over the real tokens -> MLP -> classes."""

    def __init__(self, vocab: int, hidden: int, num_labels: int):
        super().__init__()
        self.embed, self.segment = nn.Embedding(vocab, hidden), nn.Embedding(2, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, num_labels))

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.embed(input_ids)
        if token_type_ids is not None:
            h = h + self.segment(token_type_ids)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1))


class BiLSTMClassifier(nn.Module):
    """(token + segment) embeddings -> one BiLSTM layer (hidden/2 per direction) -> max pool -> classes."""

    def __init__(self, vocab: int, hidden: int, num_labels: int):
        super().__init__()
        self.embed, self.segment = nn.Embedding(vocab, hidden), nn.Embedding(2, hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.embed(input_ids)
        if token_type_ids is not None:
            h = h + self.segment(token_type_ids)
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        out = out.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
        return self.head(out.max(1).values)


class VariantClassifier(nn.Module):
    """The library's VariantBertForSequenceClassification behind the baselines' call signature."""

    def __init__(self, model: str, variant: dict, size: dict, vocab: int, num_labels: int, max_len: int,
                 pad_id: int):
        super().__init__()
        config = hv.VariantBertConfig(
            vocab_size=vocab, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"], intermediate_size=size["intermediate"],
            max_position_embeddings=max_len, type_vocab_size=2, num_labels=num_labels, pad_token_id=pad_id,
            **{**variant, "attention_variant": model})
        self.model = hv.VariantBertForSequenceClassification(config)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def classifier(model: str, variant: dict, size: dict, vocab: int, num_labels: int, max_len: int,
               pad_id: int) -> nn.Module:
    if model == "bag_of_embeddings":
        return BagOfEmbeddings(vocab, size["hidden"], num_labels)
    if model == "bilstm":
        return BiLSTMClassifier(vocab, size["hidden"], num_labels)
    return VariantClassifier(model, variant, size, vocab, num_labels, max_len, pad_id)


def causal_lm(model: str, variant: dict, size: dict, vocab: int, max_len: int) -> nn.Module:
    """The library's VariantGPT2LMHeadModel (dropout off: short, fixed-budget runs)."""
    config = hv.VariantGPT2Config(vocab_size=vocab, n_embd=size["hidden"], n_layer=size["layers"],
                                  n_head=size["heads"], n_positions=max_len, attn_pdrop=0.0, resid_pdrop=0.0,
                                  embd_pdrop=0.0, **{**variant, "attention_variant": model})
    return hv.VariantGPT2LMHeadModel(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
