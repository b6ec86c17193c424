"""The research code built on ``hf_attn_variants``: training (``train``), the experiment grid
(``experiments``, ``exp_models``, ``exp_report``, ``probes``), the data (``corpora``, ``tasks``,
``dates``, ``texts``), the MiniLM study (``study``) and the alignment pictures (``plot_alignment``),
with the ``hf-attn-variants`` command line (``cli``).

Layers: the library (``hf_attn_variants``: the Hub-flat core, ``hub``, ``costs``, ``convert``) <- its
tools (``hf_attn_variants.analysis``, importing the library only) <- this package (importing both).
Importing this package imports nothing else; each module is imported when used.
"""
