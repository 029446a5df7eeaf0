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
    check_positions_in_range,
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
    uses a normal truncated at two standard deviations, with 0.02.

    Positions follow the rule of :mod:`posenc_lib.base`: the table has rows for :math:`0 \le p < L` only, so
    a position outside :math:`[0, L)` (a negative one, or one past the last row) raises a ``ValueError`` that
    names ``max_positions``, where ``nn.Embedding`` would raise an ``IndexError`` (or a device-side
    assertion on a GPU). The check reads the smallest and largest position: on an accelerator that is one
    host-device synchronisation per call, once per model call since the table is applied before the first
    layer. It is skipped where values cannot be read (meta device, ``torch.compile``, ``torch.func``
    transforms).

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
            ValueError: If a position lies outside the table; the message gives the largest and smallest
                position asked and ``max_positions``.
        """
        positions = check_integer_tensor("positions", positions)
        check_positions_in_range("positions", positions, self.max_positions, "max_positions")
        return self.weight[positions]

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """:math:`x + P_p`, summed in the promoted dtype of ``x`` and the table, rounded once to ``x``'s."""
        x, positions = check_embed_inputs(x, positions, self.dim)
        rows = self(positions)
        work_dtype = torch.promote_types(x.dtype, rows.dtype)
        return (x.to(work_dtype) + rows.to(work_dtype)).to(x.dtype)
