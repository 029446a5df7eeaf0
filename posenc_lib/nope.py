r"""NoPE: no positional encoding at all (Kazemnejad et al. 2023).

Kazemnejad, Padhi, Natesan Ramamurthy, Das, Reddy 2023, "The Impact of Positional Encoding on Length
Generalization in Transformers" (NeurIPS 2023), train decoder-only Transformers without any positional term
and find that they generalise to longer inputs at least as well as with absolute, T5, ALiBi or rotary
encodings on their synthetic tasks.
"""

from __future__ import annotations

from posenc_lib.base import PositionalEncoding


class NoPE(PositionalEncoding):
    r"""No positional information: every hook of :class:`~posenc_lib.base.PositionalEncoding` is left as is.

    ``embed`` returns its input, ``rotate`` returns the queries and keys unchanged, and ``logit_bias`` and
    ``value_term`` are ``None``. NoPE is not a learned bias or a hidden encoding: there is no positional term
    anywhere (Kazemnejad et al. 2023, "The Impact of Positional Encoding on Length Generalization in
    Transformers").

    Where order then comes from:

    * **With a causal mask** (a decoder), query :math:`i` attends to keys :math:`0, \dots, i` only, so the
      model still sees order. Kazemnejad et al. (Theorem 1) show that the first layer can recover the absolute
      position: with equal logits, attention to a marker that only the first token carries has weight
      :math:`1/(i + 1)`.
    * **Without a mask** (an encoder), attention is permutation-*equivariant*: permuting the input tokens
      permutes the outputs in the same way, so the model cannot tell one order from another. (It is not
      permutation-*invariant*: the outputs do move with their tokens.)
    """
