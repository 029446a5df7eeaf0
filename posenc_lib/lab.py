r"""Synthetic sequence tasks, training and evaluation for the course's length-extrapolation experiments.

The experiments follow the protocol of Press et al. (2022, "Train Short, Test Long") and Kazemnejad et al.
(2023, "The Impact of Positional Encoding on Length Generalization in Transformers"): train a decoder at
one length :math:`L`, evaluate it on longer sequences. The tasks are chosen so that position matters and
the answer can be scored exactly:

* ``"lag_copy"``: random tokens; at every position :math:`i \ge \ell` predict the token at :math:`i - \ell`
  (lag :math:`\ell`, default 2). Only *relative* position is needed.
* ``"copy"``: :math:`x_1 \dots x_n`, a separator, then the model must repeat :math:`x_1 \dots x_n`.
* ``"reverse"``: the same, but the model must produce :math:`x_n \dots x_1`.

Every batch is drawn on the CPU from a seeded ``torch.Generator`` and then moved to the model's device, so
the data are the same on every machine. Targets use ``-100`` (PyTorch's ``ignore_index``) where nothing is
scored.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn import functional as F

from posenc_lib._validation import check_choice, check_positive_float, check_positive_int

TASKS = ("lag_copy", "copy", "reverse")
"""Names accepted by :func:`make_task_batch`, :func:`train_model` and :func:`evaluate_model`."""

IGNORE_INDEX = -100
SEPARATOR = 0
"""Token id of the separator in ``"copy"`` and ``"reverse"``; content tokens are ``1 .. vocab_size - 1``."""


def make_task_batch(
    task: str,
    *,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    generator: torch.Generator,
    lag: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one batch of a task: ``(tokens, targets)``, both int64 ``[batch_size, seq_len]`` on the CPU.

    ``targets[b, t]`` is the token the model must predict from ``tokens[b, : t + 1]``, or ``-100`` where the
    position is not scored. For ``"copy"`` and ``"reverse"``, ``n = (seq_len - 1) // 2`` content tokens are
    followed by the separator and their copy (reversed for ``"reverse"``); an even ``seq_len`` ends with one
    unscored padding separator.

    Args:
        task: one of :data:`TASKS`.
        batch_size: number of sequences.
        seq_len: tokens per sequence (at least ``lag + 1`` for ``"lag_copy"``, 3 for the others).
        vocab_size: number of token ids (at least 2, and 3 for ``"copy"``/``"reverse"``).
        generator: the seeded CPU generator the tokens are drawn from.
        lag: the lag :math:`\\ell` of ``"lag_copy"``.
    """
    check_choice("task", task, TASKS)
    batch_size = check_positive_int("batch_size", batch_size)
    seq_len = check_positive_int("seq_len", seq_len)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if task == "lag_copy":
        lag = check_positive_int("lag", lag)
        if seq_len <= lag or vocab_size < 2:
            raise ValueError(
                f"lag_copy needs seq_len > lag and vocab_size >= 2, got seq_len={seq_len}, lag={lag}, "
                f"vocab_size={vocab_size}"
            )
        tokens = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
        targets = torch.full_like(tokens, IGNORE_INDEX)
        targets[:, lag:] = tokens[:, :-lag]
        return tokens, targets
    if seq_len < 3 or vocab_size < 3:
        raise ValueError(f"{task} needs seq_len >= 3 and vocab_size >= 3, got {seq_len} and {vocab_size}")
    n = (seq_len - 1) // 2
    content = torch.randint(1, vocab_size, (batch_size, n), generator=generator)
    answer = content.flip(-1) if task == "reverse" else content
    tokens = torch.full((batch_size, seq_len), SEPARATOR, dtype=torch.int64)
    tokens[:, :n] = content
    tokens[:, n + 1 : 2 * n + 1] = answer
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, n : 2 * n] = answer  # from the separator on, each position predicts the next answer token
    return tokens, targets


def train_model(
    model: nn.Module,
    task: str,
    *,
    steps: int,
    seq_len: int,
    vocab_size: int,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    lag: int = 2,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` (tokens ``[B, T]`` to logits ``[B, T, vocab]``) on a task with AdamW; return losses.

    Cross-entropy on the scored positions, a constant learning rate after a linear warm-up over the first
    tenth of the steps, gradients clipped to norm 1. Batches come from ``torch.Generator().manual_seed(seed)``
    and are moved to the device of the model's parameters. A progress bar (tqdm) is shown when ``progress``
    is true; the environment variable ``TQDM_DISABLE=1`` turns it off, as the tests do.
    """
    steps = check_positive_int("steps", steps)
    lr = check_positive_float("lr", lr)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    losses = []
    model.train()
    for _ in _progress(range(steps), enabled=progress, description=f"training on {task}"):
        tokens, targets = make_task_batch(
            task, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size, generator=generator, lag=lag
        )
        logits = model(tokens.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    task: str,
    *,
    seq_len: int,
    vocab_size: int,
    batches: int = 4,
    batch_size: int = 64,
    seed: int = 12345,
    lag: int = 2,
) -> dict[str, object]:
    """Score ``model`` on fresh sequences of length ``seq_len``.

    Returns ``{"accuracy": float, "loss_by_position": Tensor [seq_len]}``: the share of scored positions
    whose most likely token is right, and the mean cross-entropy at each position (NaN where nothing is
    scored), on the CPU. A model that cannot handle the length (a learned table that is too short) raises
    its own error.
    """
    batches = check_positive_int("batches", batches)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    correct = scored = 0
    loss_sum = torch.zeros(seq_len, dtype=torch.float64)
    count = torch.zeros(seq_len, dtype=torch.float64)
    for _ in range(batches):
        tokens, targets = make_task_batch(
            task, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size, generator=generator, lag=lag
        )
        logits = model(tokens.to(device)).float().cpu()
        mask = targets != IGNORE_INDEX
        correct += int((logits.argmax(-1)[mask] == targets[mask]).sum())
        scored += int(mask.sum())
        losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        loss_sum += (losses * mask).sum(0).double()
        count += mask.sum(0).double()
    loss_by_position = torch.where(count > 0, loss_sum / count.clamp(min=1), torch.tensor(math.nan))
    return {"accuracy": correct / scored, "loss_by_position": loss_by_position}


def _progress(iterable: range, *, enabled: bool, description: str):
    """Wrap ``iterable`` in a tqdm progress bar when tqdm is installed and ``enabled``; else return it.

    ``TQDM_DISABLE=1`` in the environment turns the bar off here too: tqdm's notebook bar (which
    ``tqdm.auto`` picks in Jupyter) does not read that variable itself.
    """
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: training works without a bar
        return iterable
    return tqdm(iterable, desc=description, leave=False)
