r"""The interface every positional encoding in posenc_lib implements.

A positional encoding can act at three places in a Transformer, and each family of methods uses one:

* on the **inputs**: ``x_p + PE(p)`` before the first layer (sinusoidal, learned absolute);
* on **queries and keys**: ``q, k -> f(q, m), f(k, n)`` inside every attention layer (RoPE, xPos);
* on the **attention logits**: ``q_i . k_j / sqrt(d_h) + beta_ij`` (Shaw et al., Transformer-XL, T5, ALiBi),
  and for Shaw et al. also on the **values**: ``z_i = sum_j a_ij (v_j + a^V_ij)``.

:class:`PositionalEncoding` gives one hook for each place; a method overrides the hooks it uses and leaves
the others as they are (the identity, or no term). :class:`posenc_lib.transformer.MultiHeadAttention` calls
them, so any encoding plugs into the same attention layer. The overrides inherit the hooks' documentation
below (arguments, results, errors) and add at most a line on what their method does.

Shapes used by every hook: ``x`` is ``[batch, T, dim]``; ``q`` is ``[batch, heads, T_q, head_dim]``; ``k`` is
``[batch, heads, T_k, head_dim]``; positions are 1-D integer tensors (``q_positions`` of length ``T_q``,
``k_positions`` of length ``T_k``; a query at position :math:`m`, a key at position :math:`n`); attention
probabilities are ``[batch, heads, T_q, T_k]``. ``T_q`` or ``T_k`` may be 0.

**Positions: one rule for every entry point.** A position is any integer for which the method's formula is
defined, negative ones included:

* the sinusoid :math:`\sin(p\,\theta_c), \cos(p\,\theta_c)` (:mod:`posenc_lib.sinusoidal`), RoPE and xPos
  (:mod:`posenc_lib.rope`, :mod:`posenc_lib.xpos`) are defined for every :math:`p` (RoPE's functions
  also take fractional positions, as Position Interpolation's :math:`p/s`);
* the relative methods use only differences :math:`n - m` (Shaw et al., Transformer-XL, T5, ALiBi), so a
  common shift of all positions, to negative values or far from 0, changes nothing;
* a **learned table** (:class:`posenc_lib.learned.LearnedPositionalEmbedding`) has rows for
  :math:`0 \le p < L` only (``max_positions`` = :math:`L`): any other position is a ``ValueError`` that names
  ``max_positions``, never an ``IndexError``.

Every method gives finite results, with memory proportional to the number of positions in a call (never to
their size), for any window of positions in :math:`[-2^{31}, 2^{31}]`; angles are formed in float64, where
integers up to :math:`2^{53}` are exact. xPos has one more limit, on the spread of the positions in one call
(see :mod:`posenc_lib.xpos`).

**Checks.** Every public function and hook checks its arguments' types, dtypes and shapes and raises a
``TypeError`` or ``ValueError`` that names the argument and what it accepts. The hooks run in every layer
on every forward pass, so they read no tensor *values* where that would cost a host-device synchronisation
(on an accelerator) or break a ``torch.compile`` graph: checks of values (a position outside a learned table,
xPos's spread, NaN in user-given numbers) run in the functions users call directly (``alibi_bias``,
``t5_bucket``, ``apply_xpos``, ``LearnedPositionalEmbedding.forward``, ...), and in a hook only where the
values sit on the CPU (``values_on_host`` in ``posenc_lib._validation``). The one exception is the learned
table's :meth:`~PositionalEncoding.embed`, applied once per model call before the first layer: it checks the
range wherever values can be read, because the alternative on a GPU is a device-side assertion.
"""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """Base class: the identity on every hook, which is exactly NoPE (no positional information)."""

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        r"""Return the layer input with absolute position information added, :math:`x_p + \mathrm{PE}(p)`.

        The base class returns ``x`` itself.

        Args:
            x: Token embeddings, a floating tensor ``[..., T, dim]`` (``[batch, T, dim]`` in the model).
            positions: Integer tensor of the positions :math:`p`, ``[T]`` (shared by the batch) or
                ``x.shape[:-1]``.

        Returns:
            A tensor with the shape and dtype of ``x``.

        Raises:
            TypeError: If ``x`` is not a floating tensor or ``positions`` not an integer tensor.
            ValueError: If a shape does not fit (the message names the argument and the shape expected),
                or a position lies outside a learned table.
        """
        return x

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Return queries and keys transformed by their positions, :math:`f(q_i, m_i), f(k_j, n_j)`.

        Used by RoPE and xPos; the base class returns ``(q, k)`` unchanged.

        Args:
            q: Queries ``[batch, heads, T_q, head_dim]``, floating.
            k: Keys ``[batch, heads, T_k, head_dim]``, floating.
            q_positions: 1-D integer tensor of the query positions :math:`m`, length ``T_q``.
            k_positions: 1-D integer tensor of the key positions :math:`n`, length ``T_k``.

        Returns:
            ``(q', k')`` with the shapes and dtypes of ``q`` and ``k``.

        Raises:
            TypeError: If a tensor has the wrong kind of dtype.
            ValueError: If a shape does not fit; the message names the argument.
        """
        return q, k

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor | None:
        r"""Return the term :math:`\beta_{ij}` added to the scaled attention logits, or ``None`` for no term.

        The term includes its own scaling: the attention layer adds it to :math:`q_i \cdot k_j / \sqrt{d_h}`
        as it is. The base class returns ``None``.

        Args:
            q: Queries ``[batch, heads, T_q, head_dim]``, floating.
            k: Keys ``[batch, heads, T_k, head_dim]``, floating.
            q_positions: 1-D integer tensor of the query positions :math:`m`, length ``T_q``.
            k_positions: 1-D integer tensor of the key positions :math:`n`, length ``T_k``.

        Returns:
            A tensor that broadcasts to ``[batch, heads, T_q, T_k]``, in the dtype of ``q``, or ``None``.

        Raises:
            TypeError: If a tensor has the wrong kind of dtype.
            ValueError: If a shape does not fit (head count, head width, positions of the wrong length); the
                message names the argument.
        """
        return None

    def value_term(
        self,
        probs: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor | None:
        r"""Return a term added to the attention output :math:`\sum_j \alpha_{ij} v_j`, or ``None``.

        Only Shaw et al.'s relative representations use it; the base class returns ``None``.

        Args:
            probs: Attention probabilities :math:`\alpha` ``[batch, heads, T_q, T_k]``, floating.
            q_positions: 1-D integer tensor of the query positions :math:`m`, length ``T_q``.
            k_positions: 1-D integer tensor of the key positions :math:`n`, length ``T_k``.

        Returns:
            A tensor ``[batch, heads, T_q, head_dim]`` in the dtype of ``probs``, or ``None``.

        Raises:
            TypeError: If a tensor has the wrong kind of dtype.
            ValueError: If a shape does not fit; the message names the argument.
        """
        return None
