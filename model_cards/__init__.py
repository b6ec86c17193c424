"""Model-card templates (package data: installed as ``hf_attn_variants.model_cards``; see ``hf_attn_variants.hub``)."""
