"""Config of the LSTMN fusion pair classifier (Cheng et al. 2016, section 4), validated in one place.

Hub code: imports only transformers.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

FUSIONS = ("shallow", "deep")

FUSION_AUTO_MAP = {
    "AutoConfig": "configuration_lstmn_fusion.LSTMNFusionConfig",
    "AutoModel": "modeling_lstmn_fusion.LSTMNFusionModel",
    "AutoModelForSequenceClassification": "modeling_lstmn_fusion.LSTMNFusionForSequenceClassification",
}


def _bad(field: str, value, expected: str) -> ValueError:
    return ValueError(f"{field}={value!r} is invalid: expected {expected}.")


class LSTMNFusionConfig(PreTrainedConfig):
    """Two LSTMNs (premise, hypothesis) joined by inter-attention.

    vocab_size:        token vocabulary (shared by both sentences).
    hidden_size:       d, the size of the embeddings and of both LSTMNs' states.
    fusion:            ``shallow`` (the hypothesis LSTMN reads the premise tape by inter-attention; the
                       summary joins the classifier) or ``deep`` (the summary also enters the hypothesis
                       LSTMN's memory cell through a gate r_t, eq. 15-17 of the paper).
    dropout:           dropout on the embeddings and on the pair representation.
    initializer_range: std of the normal initialisation.
    """

    model_type = "lstmn_fusion"

    def __init__(self, vocab_size: int = 8000, hidden_size: int = 128, fusion: str = "deep", dropout: float = 0.1,
                 initializer_range: float = 0.02, pad_token_id: int | None = 0, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.fusion = fusion
        self.dropout = dropout
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.auto_map = {**FUSION_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.validate_fusion_fields()

    def validate_fusion_fields(self) -> None:
        """Check every field; raise ValueError naming the field and the value."""
        for name in ("vocab_size", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _bad(name, value, "a positive integer")
        if self.fusion not in FUSIONS:
            raise _bad("fusion", self.fusion, f"one of {FUSIONS}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise _bad("dropout", self.dropout, "a number in [0, 1)")
