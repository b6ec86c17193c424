"""Head importance measured causally, through hooks (the Hub code is not touched).

``HeadIntervention(model)`` hooks every (non-LSTMN) Variant attention layer at the input of its
output projection, where the per-head outputs (B, T, H·D) are still separate, and can
- multiply each head's output by a gate ξ (Michel et al. 2019, "Are Sixteen Heads Really Better
  than One?"): importance I_h = E_x |∂L(x)/∂ξ_h| at ξ = 1, or ξ = 0 to prune a head;
- replace a head's output by what uniform attention over the keys it may see would give
  (the mean of its values), for the loss change of a head without its pattern.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..hfav_attention import VariantAttention

Tensor = torch.Tensor


def attention_layers(model: nn.Module) -> list[tuple[str, VariantAttention]]:
    """The model's Variant attention modules (bottom first) with their names."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, VariantAttention)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no Variant attention layers: convert it with "
                         "hf_attn_variants.convert_from_dense first")
    return found


def _output_site(model: nn.Module, name: str, module: VariantAttention) -> nn.Module:
    if hasattr(module, "c_proj"):  # GPT-2: the projection lives in the attention module
        return module.c_proj
    parent = name.rsplit(".", 1)[0]  # ...attention.self -> ...attention
    return model.get_submodule(parent + ".output.dense")


class HeadIntervention:
    """Context manager; set ``gates`` (L, B or 1, H), ``uniform`` (L, H) bool and ``key_mask`` (B, T)
    before a forward. Every head's output passes through them."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = attention_layers(model)
        self.num_layers = len(self.layers)
        self.num_heads = self.layers[0][1].num_heads
        self.gates: Tensor | None = None
        self.uniform: Tensor | None = None
        self.key_mask: Tensor | None = None
        self._values: dict[int, Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> HeadIntervention:
        for idx, (name, module) in enumerate(self.layers):
            self._handles.append(module.register_forward_pre_hook(self._save_values(idx)))
            site = _output_site(self.model, name, module)
            self._handles.append(site.register_forward_pre_hook(self._edit(idx, module)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._values.clear()

    def _save_values(self, idx: int):
        def hook(module, args):  # before the module runs: GPT-2 projects its output inside forward
            if self.uniform is not None and self.uniform[idx].any():
                v = module._project(args[0])[2]  # (B, T, H·D)
                self._values[idx] = v.view(*v.shape[:2], module.num_heads, -1)  # (B, T, H, D)
        return hook

    def _uniform_output(self, idx: int, module: VariantAttention, t: int) -> Tensor:
        v = self._values.pop(idx)
        b = v.shape[0]
        visible = torch.ones(b, t, t, dtype=torch.bool, device=v.device)
        if self.key_mask is not None:
            visible = visible & self.key_mask[:, None, :].bool()
        if module.causal:
            visible = visible & torch.ones(t, t, dtype=torch.bool, device=v.device).tril()
        u = visible.float() / visible.sum(-1, keepdim=True).clamp_min(1)
        return torch.einsum("bij,bjhd->bihd", u, v)  # (B, T, H, D)

    def _edit(self, idx: int, module: VariantAttention):
        def hook(site, args):
            ctx = args[0]
            heads = ctx.view(*ctx.shape[:2], module.num_heads, -1)  # (B, T, H, D)
            if self.uniform is not None and self.uniform[idx].any():
                uni = self._uniform_output(idx, module, ctx.shape[1])
                heads = torch.where(self.uniform[idx].view(1, 1, -1, 1).to(ctx.device), uni, heads)
            if self.gates is not None:
                heads = heads * self.gates[idx][:, None, :, None].to(ctx.dtype)  # (B or 1, 1, H, 1)
            return (heads.reshape(ctx.shape),) + tuple(args[1:])
        return hook


LossFn = Callable[[nn.Module, dict], Tensor]  # (model, batch) -> per-example losses (B,)


def gradient_importance(model: nn.Module, batches: list[dict], loss_fn: LossFn) -> Tensor:
    """Michel et al. 2019: I_h = mean over examples of |∂L(x)/∂ξ_h| at ξ = 1 -> (L, H).
    One gate per example and head, so a single backward per batch gives per-example gradients."""
    total, count = None, 0
    with HeadIntervention(model) as hi:
        for batch in batches:
            b = next(iter(v for v in batch.values() if torch.is_tensor(v))).shape[0]
            gates = torch.ones(hi.num_layers, b, hi.num_heads, requires_grad=True)
            hi.gates, hi.key_mask = gates, batch.get("attention_mask")
            loss_fn(model, batch).sum().backward()
            grad = gates.grad.abs().sum(dim=1)  # (L, H)
            total = grad if total is None else total + grad
            count += b
            model.zero_grad(set_to_none=True)
    return total / count


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[dict], loss_fn: LossFn, hi: HeadIntervention) -> float:
    losses = []
    for batch in batches:
        hi.key_mask = batch.get("attention_mask")
        losses.append(loss_fn(model, batch))
    return torch.cat(losses).mean().item()


@torch.no_grad()
def uniform_replacement_delta(model: nn.Module, batches: list[dict], loss_fn: LossFn,
                              progress: bool = False) -> tuple[float, Tensor]:
    """Loss change when one head at a time attends uniformly: (base loss, (L, H) deltas)."""
    with HeadIntervention(model) as hi:
        base = mean_loss(model, batches, loss_fn, hi)
        delta = torch.zeros(hi.num_layers, hi.num_heads)
        cells = [(layer, h) for layer in range(hi.num_layers) for h in range(hi.num_heads)]
        if progress:
            from tqdm.auto import tqdm
            cells = tqdm(cells, desc="uniform heads")
        for layer, h in cells:
            hi.uniform = torch.zeros(hi.num_layers, hi.num_heads, dtype=torch.bool)
            hi.uniform[layer, h] = True
            delta[layer, h] = mean_loss(model, batches, loss_fn, hi) - base
    return base, delta


@torch.no_grad()
def pruning_curve(model: nn.Module, batches: list[dict], metric_fn: Callable[[nn.Module, list[dict]], float],
                  importance: Tensor, kept: list[int]) -> list[dict]:
    """Michel et al.'s test-time pruning: drop the least important heads first (gate 0) and
    measure ``metric_fn`` with the given numbers of heads kept. Returns [{heads_kept, metric}]."""
    order = importance.flatten().argsort()  # least important first
    n = order.numel()
    rows = []
    with HeadIntervention(model) as hi:
        for k in kept:
            gates = torch.ones(n)
            gates[order[: n - k]] = 0.0
            hi.gates = gates.view(hi.num_layers, 1, hi.num_heads)
            rows.append({"heads_kept": k, "metric": metric_fn(model, batches)})
    return rows
