r"""Learned absolute position embeddings: one trained vector per position, added to the token embedding.

GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") keeps 1024 of them
(``wpe``) and BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding") 512 (``position_embeddings``). There is no vector past the last row, so such a model cannot be
run on longer inputs at all without extending the table.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc_lib._validation import (
    check_embed_inputs,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
)
from posenc_lib.base import PositionalEncoding


class LearnedPositionalEmbedding(PositionalEncoding):
    r"""A trainable table :math:`P \in \mathbb{R}^{L \times d}`; the layer input becomes :math:`x_p + P_p`.

    This is GPT-2's ``wpe = nn.Embedding(n_positions, d)`` used as ``h = wte(ids) + wpe(positions)``
    (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"; Hugging Face
    ``GPT2Model``), and BERT's ``position_embeddings`` before its LayerNorm (Devlin et al. 2019). The table
    is the parameter ``weight`` of shape ``[max_positions, dim]``; its rows start as samples of
    :math:`\mathcal{N}(0, \sigma^2)` with :math:`\sigma` = ``init_std`` = 0.02, the ``initializer_range`` of
    Hugging Face's GPT-2 and BERT configs. The original code differs slightly: OpenAI's GPT-2
    (``src/model.py``) draws ``wpe`` with standard deviation 0.01 (and ``wte`` with 0.02), and Google's BERT
    uses a normal truncated at two standard deviations, with 0.02. Asking for a position outside
    :math:`[0, L)` raises a ``ValueError`` that says so, where ``nn.Embedding`` would raise an
    ``IndexError`` (or a device-side assert on a GPU).

    Args:
        max_positions: Number of rows :math:`L` (GPT-2: 1024, BERT: 512).
        dim: Model dimension :math:`d`.
        init_std: Standard deviation of the initial values.
    """

    def __init__(self, max_positions: int, dim: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.max_positions = check_positive_int("max_positions", max_positions)
        self.dim = check_positive_int("dim", dim)
        self.init_std = check_positive_float("init_std", init_std)
        self.weight = nn.Parameter(torch.empty(self.max_positions, self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Draw every row again from :math:`\mathcal{N}(0, \mathrm{init\_std}^2)`."""
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)

    def extra_repr(self) -> str:
        """Describe the settings in the module's repr."""
        return f"max_positions={self.max_positions}, dim={self.dim}, init_std={self.init_std}"

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Return the table rows of ``positions``.

        Args:
            positions: Integer tensor, any shape, with values in ``[0, max_positions)``.

        Returns:
            Tensor of shape ``[*positions.shape, dim]`` (the table's dtype and device).

        Raises:
            TypeError: If ``positions`` is not an integer tensor.
            ValueError: If a position lies outside the table; the message gives the largest (or smallest)
                position asked and the table size.
        """
        positions = check_integer_tensor("positions", positions)
        if positions.numel():
            largest, smallest = int(positions.max()), int(positions.min())
            if largest >= self.max_positions or smallest < 0:
                raise ValueError(
                    f"positions must lie in [0, {self.max_positions - 1}]: the table has "
                    f"max_positions={self.max_positions} rows, but the largest position asked is {largest} "
                    f"and the smallest {smallest}. A learned table has no vector past its last row."
                )
        return self.weight[positions]

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`x + P_{\mathrm{positions}}` in the dtype of ``x``.

        The sum is formed in the promoted dtype of ``x`` and the table and rounded once to the dtype of ``x``.

        Args:
            x: Floating tensor ``[..., T, dim]``.
            positions: Integer tensor of shape ``[T]`` or ``x.shape[:-1]``.

        Returns:
            Tensor with the shape and dtype of ``x``.

        Raises:
            TypeError: If ``x`` is not floating or ``positions`` is not an integer tensor.
            ValueError: If the shapes do not fit or a position lies outside the table.
        """
        x, positions = check_embed_inputs(x, positions, self.dim)
        rows = self(positions)
        work_dtype = torch.promote_types(x.dtype, rows.dtype)
        return (x.to(work_dtype) + rows.to(work_dtype)).to(x.dtype)
