r"""A patch-grid task where the dimensionality of the positional encoding matters, and a tiny encoder for it.

The task (``make_patch_batch``): an :math:`H \times W` grid of random symbols, read as :math:`T = HW`
tokens in row-major order (token :math:`n` is the patch at row :math:`\lfloor n/W \rfloor`, column
:math:`n \bmod W`, as a vision Transformer flattens its patches). At every patch :math:`(i, j)` the model
must output the symbol of the patch at :math:`(i + \delta_i, j + \delta_j)`, by default the one directly
above, :math:`(\delta_i, \delta_j) = (-1, 0)`; patches whose neighbour falls outside the grid are not
scored. Only the 2-D offset matters, and the symbols are random, so the task can only be solved by
attending to the right relative position.

The model (:class:`PatchEncoder`): a bidirectional pre-norm Transformer encoder whose attention rotates
queries and keys by

* ``"rope_1d"``: 1-D RoPE (Su et al. 2021) over the flattened index :math:`n = iW + j`: the patch above is
  :math:`W` tokens back, an offset that changes with the grid width;
* ``"rope_2d"``: axial 2-D RoPE (:func:`posenc_lib.rope2d.apply_rope_2d`), half of the pairs by the row
  and half by the column, so the patch above is at the offset :math:`(-1, 0)` on every grid;
* ``"rope_mixed"``: RoPE-Mixed (Heo et al. 2024, arXiv:2403.13298), 2-D RoPE with learned frequencies
  (:class:`posenc_lib.rope2d.RoPEMixed`), one set per layer;
* ``"none"``: no positional encoding (the control: without positions, the task cannot be solved).

Batches are drawn on the CPU from a seeded ``torch.Generator`` and moved to the model's device, so the
data are the same on every machine; targets use ``-100`` (PyTorch's ``ignore_index``) where nothing is
scored.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from posenc_lib._validation import check_choice, check_positive_float, check_positive_int
from posenc_lib.lab import IGNORE_INDEX
from posenc_lib.rope import apply_rope
from posenc_lib.rope2d import RoPEMixed, apply_rope_2d, patch_grid_positions

PATCH_ENCODINGS = ("rope_1d", "rope_2d", "rope_mixed", "none")
"""Names accepted by :class:`PatchEncoder`."""


def make_patch_batch(
    height: int,
    width: int,
    *,
    batch_size: int,
    vocab_size: int,
    generator: torch.Generator,
    offset: tuple[int, int] = (-1, 0),
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw one batch of the patch task: ``(tokens, targets)``, int64 ``[batch_size, height * width]``.

    ``tokens`` are symbols drawn uniformly from ``0 .. vocab_size - 1``, in row-major order;
    ``targets[b, iW + j]`` is the symbol at ``(i + offset[0], j + offset[1])``, or ``-100`` where that patch
    is outside the grid.

    Args:
        height: rows :math:`H` of the grid.
        width: columns :math:`W` of the grid.
        batch_size: number of grids.
        vocab_size: number of symbols (at least 2).
        generator: the seeded CPU generator the symbols are drawn from.
        offset: :math:`(\delta_i, \delta_j)`, the neighbour to copy, with :math:`|\delta_i|` below the
            height and :math:`|\delta_j|` below the width.
    """
    height, width = check_positive_int("height", height), check_positive_int("width", width)
    batch_size = check_positive_int("batch_size", batch_size)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    row_shift, col_shift = _check_offset(offset, height, width)
    tokens = torch.randint(0, vocab_size, (batch_size, height, width), generator=generator)
    targets = torch.full_like(tokens, IGNORE_INDEX)
    rows = slice(max(0, -row_shift), height - max(0, row_shift))
    cols = slice(max(0, -col_shift), width - max(0, col_shift))
    source_rows = slice(rows.start + row_shift, rows.stop + row_shift)
    source_cols = slice(cols.start + col_shift, cols.stop + col_shift)
    targets[:, rows, cols] = tokens[:, source_rows, source_cols]
    return tokens.flatten(1), targets.flatten(1)


class PatchEncoder(nn.Module):
    r"""A tiny bidirectional Transformer encoder over a flattened patch grid, with a rotary encoding.

    Token embedding, ``num_layers`` pre-norm blocks (multi-head self-attention without a mask, then a 4x
    GELU MLP), a final LayerNorm and a linear read-out to ``vocab_size`` symbols. Attention rotates queries
    and keys by the ``encoding`` (see :data:`PATCH_ENCODINGS` and the module docstring) and scales scores by
    :math:`1/\sqrt{d_h}`.

    Args:
        encoding: one of :data:`PATCH_ENCODINGS`.
        vocab_size: number of symbols.
        dim: model width :math:`d`.
        num_heads: heads per layer; the head width :math:`d_h = d / H` must be a multiple of 4 for the 2-D
            encodings.
        num_layers: number of blocks.
        base: the RoPE base :math:`b` (RoPE-ViT uses 100 for axial RoPE and 10 for RoPE-Mixed).
    """

    def __init__(
        self,
        encoding: str,
        *,
        vocab_size: int,
        dim: int = 32,
        num_heads: int = 4,
        num_layers: int = 1,
        base: float = 100.0,
    ) -> None:
        super().__init__()
        self.encoding = check_choice("encoding", encoding, PATCH_ENCODINGS)
        self.dim, self.num_heads = check_positive_int("dim", dim), check_positive_int("num_heads", num_heads)
        if dim % num_heads or (dim // num_heads) % 4:
            raise ValueError(
                f"dim / num_heads must be an integer multiple of 4 (head width for 2-D RoPE), got dim={dim}, "
                f"num_heads={num_heads}"
            )
        self.head_dim = dim // num_heads
        self.base = check_positive_float("base", base)
        self.embedding = nn.Embedding(check_positive_int("vocab_size", vocab_size), dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "attention_norm": nn.LayerNorm(dim),
                    "qkv": nn.Linear(dim, 3 * dim),
                    "out": nn.Linear(dim, dim),
                    "mlp_norm": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
                }
            )
            for _ in range(check_positive_int("num_layers", num_layers))
        )
        if encoding == "rope_mixed":
            self.mixed = nn.ModuleList(
                RoPEMixed(self.head_dim, num_heads, base=base, layout="half") for _ in range(num_layers)
            )
        self.final_norm = nn.LayerNorm(dim)
        self.readout = nn.Linear(dim, vocab_size)

    def forward(
        self, tokens: torch.Tensor, height: int, width: int, *, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[batch, height * width, vocab_size]`` for the row-major ``tokens`` of a grid.

        With ``return_attention``, also the attention weights of every layer, ``[num_layers, batch,
        num_heads, T, T]`` (queries by keys, ``T = height * width``).
        """
        if tokens.ndim != 2 or tokens.shape[1] != height * width:
            raise ValueError(
                f"tokens must have shape [batch, height * width] = [batch, {height * width}], "
                f"got {tuple(tokens.shape)}"
            )
        batch, length = tokens.shape
        rows, cols = patch_grid_positions(height, width, device=tokens.device)
        flat = torch.arange(length, device=tokens.device)  # n = i W + j
        x = self.embedding(tokens)
        maps = []
        for index, block in enumerate(self.blocks):
            qkv = block["qkv"](block["attention_norm"](x))
            q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k = (self._rotate(t, flat, rows, cols, index) for t in (q, k))
            if return_attention:
                probs = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)
                maps.append(probs)
                z = probs @ v
            else:
                z = F.scaled_dot_product_attention(q, k, v)
            x = x + block["out"](z.transpose(1, 2).reshape(batch, length, self.dim))
            x = x + block["mlp"](block["mlp_norm"](x))
        logits = self.readout(self.final_norm(x))
        return (logits, torch.stack(maps)) if return_attention else logits

    def _rotate(
        self, x: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, layer: int
    ) -> torch.Tensor:
        if self.encoding == "rope_1d":
            return apply_rope(x, flat, base=self.base)
        if self.encoding == "rope_2d":
            return apply_rope_2d(x, rows, cols, base=self.base)
        if self.encoding == "rope_mixed":
            return self.mixed[layer](x, rows, cols)
        return x


def train_patch_model(
    model: PatchEncoder,
    *,
    steps: int,
    height: int,
    width: int,
    vocab_size: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    offset: tuple[int, int] = (-1, 0),
) -> list[float]:
    """Train ``model`` on the patch task at one grid size with AdamW (constant ``lr``); return the losses.

    Batches come from ``torch.Generator().manual_seed(seed)`` on the CPU and are moved to the model's device.
    """
    steps = check_positive_int("steps", steps)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=check_positive_float("lr", lr), weight_decay=0.0)
    losses = []
    model.train()
    for _ in range(steps):
        tokens, targets = make_patch_batch(
            height, width, batch_size=batch_size, vocab_size=vocab_size, generator=generator, offset=offset
        )
        logits = model(tokens.to(device), height, width)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def evaluate_patch_model(
    model: PatchEncoder,
    *,
    height: int,
    width: int,
    vocab_size: int,
    batch_size: int = 64,
    seed: int = 12345,
    offset: tuple[int, int] = (-1, 0),
) -> float:
    """The share of scored patches whose most likely symbol is right, on one fresh batch of grids."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    tokens, targets = make_patch_batch(
        height, width, batch_size=batch_size, vocab_size=vocab_size, generator=generator, offset=offset
    )
    model.eval()
    predictions = model(tokens.to(device), height, width).argmax(-1).cpu()
    scored = targets != IGNORE_INDEX
    return (predictions[scored] == targets[scored]).double().mean().item()


def _check_offset(offset: object, height: int, width: int) -> tuple[int, int]:
    if (
        not isinstance(offset, tuple)
        or len(offset) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in offset)
    ):
        raise TypeError(f"offset must be a tuple of two ints (row shift, column shift), got {offset!r}")
    row_shift, col_shift = offset
    if abs(row_shift) >= height or abs(col_shift) >= width:
        raise ValueError(
            f"offset {offset} leaves no scored patch on a {height} x {width} grid: need |row shift| < height "
            f"and |column shift| < width"
        )
    return row_shift, col_shift
