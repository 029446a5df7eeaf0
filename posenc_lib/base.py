"""The interface every positional encoding in posenc_lib implements.

A positional encoding can act at three places in a Transformer, and each family of methods uses one:

* on the **inputs**: ``x_p + PE(p)`` before the first layer (sinusoidal, learned absolute);
* on **queries and keys**: ``q, k -> f(q, m), f(k, n)`` inside every attention layer (RoPE, xPos);
* on the **attention logits**: ``q_i . k_j / sqrt(d_h) + beta_ij`` (Shaw et al., Transformer-XL, T5, ALiBi),
  and for Shaw et al. also on the **values**: ``z_i = sum_j a_ij (v_j + a^V_ij)``.

:class:`PositionalEncoding` gives one hook for each place; a method overrides the hooks it uses and leaves
the others as they are (the identity, or no term). :class:`posenc_lib.transformer.MultiHeadAttention` calls
them, so any encoding plugs into the same attention layer.

Shapes used by every hook: ``x`` is ``[batch, T, dim]``; ``q`` is ``[batch, heads, T_q, head_dim]``; ``k`` is
``[batch, heads, T_k, head_dim]``; positions are 1-D integer tensors (``q_positions`` of length ``T_q``,
``k_positions`` of length ``T_k``); attention probabilities are ``[batch, heads, T_q, T_k]``.
"""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """Base class: the identity on every hook, which is exactly NoPE (no positional information)."""

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Return the layer input with absolute position information added (``[batch, T, dim]``)."""
        return x

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return queries and keys transformed by their positions (RoPE, xPos); the identity by default."""
        return q, k

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor | None:
        """Return a term added to the scaled attention logits, broadcastable to ``[batch, heads, T_q, T_k]``.

        The term includes its own scaling: the attention layer adds it to ``q k^T / sqrt(head_dim)`` as is.
        ``None`` (the default) means no term.
        """
        return None

    def value_term(
        self,
        probs: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor | None:
        """Return a term added to the attention output ``probs @ v`` (``[batch, heads, T_q, head_dim]``).

        Only Shaw et al.'s relative attention uses it. ``None`` (the default) means no term.
        """
        return None
