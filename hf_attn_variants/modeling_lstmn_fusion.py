"""Sentence-pair classification by two LSTMNs joined with inter-attention (Cheng et al. 2016, section 4).

The premise is read by one LSTMN (intra-attention over its own tape, docs/design.md's equations); its tape
of hidden states γ_j and memory cells α_j is the "source memory". A second LSTMN reads the hypothesis
and, at every step t, also attends over the premise tape (inter-attention):

    b_j^t = uᵀ tanh(W_γ γ_j + W_y x_t + W_γ̃ γ̃_{t-1}),   p^t = softmax_j(b^t)   (real premise tokens)
    [γ̃_t; α̃_t] = Σ_j p_j^t [γ_j; α_j]

- shallow fusion: the hypothesis LSTMN's own recurrence is the intra-only one; the inter-attention
  summary γ̃ is read beside it.
- deep fusion: the summary enters the hypothesis memory cell through a new gate,
  r_t = σ(W_r [γ̃_t; x_t] + b_r),  c_t = r_t ⊙ α̃_t + f_t ⊙ c̃_t + i_t ⊙ ĉ_t,  h_t = o_t ⊙ tanh(c_t).

The pair is classified from the last real hypothesis token, as in Rocktäschel et al. 2016 whom the
paper follows: z = tanh(W_p γ̃_T + W_h h_T), logits = W_c z. The paper's shallow/deep reading of
eq. 13-17 is kept; its classifier details (MLP sizes, d = 450, GloVe) are not.

Inputs are the ordinary pair encoding ``tokenizer(premise, hypothesis)``: ``token_type_ids`` 0 mark
the premise (with its [CLS] and [SEP]), 1 the hypothesis; so Trainer, the pair collator and the
``text-classification`` pipeline work unchanged. Each side is compacted to its own left-aligned
sequence before the LSTMNs run.

``fusion_scan`` runs the LSTMN's one step (``kernels_lstmn.lstmn_step``, the step of every LSTMN of the
package) with the inter-attention read (``kernels_lstmn.tape_read``, the same read on the source tape)
beside it; the tests compare it with the equations written out one sequence at a time.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_lstmn_fusion import LSTMNFusionConfig
from .hfav_attention import LSTMNCell
from .hfav_kernels import lstmn_start, lstmn_step, tape_read
from .hfav_masks import reject_unknown_kwargs, wrap_output

Tensor = torch.Tensor


class InterAttention(nn.Module):
    """Inter-attention parameters: w_source (W_γ), w_input (W_y), w_summary (W_γ̃), score (u);
    ``fuse`` (W_r, b_r on [γ̃_t; x_t]) only for deep fusion."""

    def __init__(self, input_size: int, hidden_size: int, deep: bool):
        super().__init__()
        self.w_source = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_input = nn.Linear(input_size, hidden_size, bias=False)
        self.w_summary = nn.Linear(hidden_size, hidden_size, bias=False)
        self.score = nn.Parameter(torch.zeros(hidden_size))  # drawn by _init_weights; never uninitialised
        if deep:
            self.fuse = nn.Linear(hidden_size + input_size, hidden_size)


def fusion_scan(cell: LSTMNCell, x: Tensor, key_mask: Tensor | None = None, inter: InterAttention | None = None,
                source: tuple[Tensor, Tensor] | None = None, source_mask: Tensor | None = None,
                need_weights: bool = False) -> dict[str, Tensor | None]:
    """One LSTMN over x (B, T, d_in), optionally reading a source tape (γ, α) (B, S, d) by inter-attention.

    Each step: the inter-attention read of the source (γ̃_t, α̃_t from γ̃_{t-1}), then ``lstmn_step``
    (deep fusion adds r_t ⊙ α̃_t to its memory cell). key_mask (B, T) / source_mask (B, S): True for
    real tokens. Returns ``h``, ``c`` (B, T, d), the inter-attention summaries ``g`` (γ̃_t, (B, T, d);
    None without a source) and, with ``need_weights``, ``intra`` (B, T, T + 1) over [zero slot, tokens]
    and ``inter`` (B, T, S).
    """
    B, T, _ = x.shape
    state = lstmn_start(x, cell.hidden_size)
    real = key_mask.bool() if key_mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
    if source is not None:
        s_keys, s_x = inter.w_source(source[0]), inter.w_input(x)  # W_γ γ_j once: (B, S, d); W_y x_t: (B, T, d)
        s_allowed = source_mask if source_mask is not None else torch.ones(source[0].shape[:2], dtype=torch.bool,
                                                                           device=x.device)
        g_sum = x.new_zeros(B, cell.hidden_size)
    hs, gs, intra_w, inter_w = [], [], [], []
    for t in range(T):
        c_extra = None
        if source is not None:
            p, g_sum, a_sum = tape_read(s_keys, s_x[:, t] + inter.w_summary(g_sum), inter.score, s_allowed, *source)
            gs.append(g_sum)
            inter_w.append(p)
            if hasattr(inter, "fuse"):  # deep fusion: r_t = σ(W_r [γ̃_t; x_t] + b_r)
                c_extra = torch.sigmoid(inter.fuse(torch.cat([g_sum, x[:, t]], dim=-1))) * a_sum
        h, s = lstmn_step(cell, state, x[:, t], real[:, t], c_extra)
        hs.append(h)
        if need_weights:
            intra_w.append(torch.cat([s, s.new_zeros(B, T - t)], dim=-1))
    return {"h": torch.stack(hs, 1), "c": state["c"][:, 1:], "g": torch.stack(gs, 1) if gs else None,
            "intra": torch.stack(intra_w, 1) if need_weights else None,
            "inter": torch.stack(inter_w, 1) if need_weights and inter_w else None}


def split_pair(input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A pair encoding (B, T) -> premise ids, premise mask, hypothesis ids, hypothesis mask, each side
    left-aligned and padded to its longest row (pad id 0 where the mask is False)."""
    if token_type_ids is None:
        raise ValueError("token_type_ids is None: the fusion model needs a pair encoding, "
                         "tokenizer(premise, hypothesis), whose token_type_ids mark the hypothesis with 1")
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    sides = []
    for side in (real & (token_type_ids == 0), real & (token_type_ids == 1)):
        lengths = side.sum(-1)  # (B,)
        if bool((lengths == 0).any()):
            raise ValueError("a row has an empty premise or hypothesis (token_type_ids 0 / 1 with attention 1)")
        order = torch.argsort((~side).to(torch.int8), dim=-1, stable=True)[:, :int(lengths.max())]  # its tokens first
        mask = torch.arange(order.shape[1], device=input_ids.device)[None] < lengths[:, None]  # (B, T_side)
        sides += [input_ids.gather(1, order).masked_fill(~mask, 0), mask]
    return tuple(sides)


class LSTMNFusionPreTrainedModel(PreTrainedModel):
    config_class = LSTMNFusionConfig
    config: LSTMNFusionConfig
    base_model_prefix = "fusion"
    _no_split_modules = ["LSTMNFusionModel"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (LSTMNCell, InterAttention)):
            init.normal_(module.score, mean=0.0, std=std)


class LSTMNFusionModel(LSTMNFusionPreTrainedModel):
    """Embeddings, a premise LSTMN and a hypothesis LSTMN with inter-attention (``config.fusion``).

    Returns ``last_hidden_state`` = the hypothesis states (B, T_h, d), ``pooler_output`` = the pair
    representation z = tanh(W_p γ̃_T + W_h h_T) (B, d), and with ``output_attentions`` the tuple
    (premise intra (B, 1, T_p, T_p), hypothesis intra (B, 1, T_h, T_h), inter (B, 1, T_h, T_p)) in the
    coordinates of the compacted sides (the intra weights without the zero slot).
    """

    def __init__(self, config: LSTMNFusionConfig):
        config.validate_fusion_fields()
        super().__init__(config)
        d = config.hidden_size
        self.embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.premise_cell = LSTMNCell(d, d)
        self.hypothesis_cell = LSTMNCell(d, d)
        self.inter = InterAttention(d, d, deep=config.fusion == "deep")
        self.w_premise = nn.Linear(d, d, bias=False)
        self.w_hypothesis = nn.Linear(d, d)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_attentions: bool | None = None,
                return_dict: bool | None = None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        if input_ids is None:
            raise ValueError("input_ids is None: the fusion model reads token ids (a pair encoding)")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        p_ids, p_mask, h_ids, h_mask = split_pair(input_ids, attention_mask, token_type_ids)
        premise = fusion_scan(self.premise_cell, self.dropout(self.embeddings(p_ids)), p_mask,
                              need_weights=output_attentions)
        hyp = fusion_scan(self.hypothesis_cell, self.dropout(self.embeddings(h_ids)), h_mask, self.inter,
                          (premise["h"], premise["c"]), p_mask, need_weights=output_attentions)
        last = h_mask.sum(-1) - 1  # (B,) the last real hypothesis token
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled = torch.tanh(self.w_premise(hyp["g"][rows, last]) + self.w_hypothesis(hyp["h"][rows, last]))
        attentions = None
        if output_attentions:
            attentions = (premise["intra"][:, None, :, 1:], hyp["intra"][:, None, :, 1:], hyp["inter"][:, None])
        output = BaseModelOutputWithPooling(last_hidden_state=hyp["h"], pooler_output=pooled, attentions=attentions)
        return wrap_output(output, return_dict, self.config)


class LSTMNFusionForSequenceClassification(LSTMNFusionPreTrainedModel):
    """The pair representation -> dropout -> linear. Mean loss, so Trainer scales it under accumulation."""

    accepts_loss_kwargs = False

    def __init__(self, config: LSTMNFusionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fusion = LSTMNFusionModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, output_attentions=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.fusion(input_ids, attention_mask, token_type_ids, output_attentions, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
        output = SequenceClassifierOutput(loss=loss, logits=logits, attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)
