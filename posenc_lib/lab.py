r"""Synthetic sequence tasks, training and evaluation for the course's length-extrapolation experiments.

The experiments follow the protocol of Press et al. (2022, "Train Short, Test Long") and Kazemnejad et al.
(2023, "The Impact of Positional Encoding on Length Generalization in Transformers"): train a decoder at
one length :math:`L`, evaluate it on longer sequences. The tasks are chosen so that position matters and
the answer can be scored exactly:

* ``"lag_copy"``: random tokens; at every position :math:`i \ge \ell` predict the token at :math:`i - \ell`
  (lag :math:`\ell`, default 2). Only *relative* position is needed.
* ``"copy"``: :math:`x_1 \dots x_n`, a separator, then the model must repeat :math:`x_1 \dots x_n`.
* ``"reverse"``: the same, but the model must produce :math:`x_n \dots x_1`.
* ``"kv_recall"``: multi-query associative recall (Ba et al. 2016, "Using Fast Weights to Attend to the Recent
  Past"; Arora et al. 2023, "Zoology", arXiv:2312.04927, whose MQAR this follows): :math:`n` pairs
  :math:`k_1 v_1 \dots k_n v_n` with distinct keys, then :math:`n` queries :math:`k_{a_1} v_{a_1} \dots`,
  each a key of the pairs followed by its value; at each query key the model must predict the value. It needs
  local order (which value follows which key) and retrieval at any distance (where the key appeared).

Every batch is drawn on the CPU from a seeded ``torch.Generator`` and then moved to the model's device, so
the data are the same on every machine. Targets use ``-100`` (PyTorch's ``ignore_index``) where nothing is
scored.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Mapping
from importlib import resources

import torch
from torch import nn
from torch.nn import functional as F

from posenc_lib._validation import check_choice, check_positive_float, check_positive_int
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.rope_scaling import rope_frequencies, rope_inverse_frequencies

RESULTS = ("context_extension_lab", "smollm2_long_context")
"""Results files that :func:`load_results` can read (written by the scripts of the same names in
``experiments/``)."""

TASKS = ("lag_copy", "copy", "reverse", "kv_recall")
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
    num_keys: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one batch of a task: ``(tokens, targets)``, both int64 ``[batch_size, seq_len]`` on the CPU.

    ``targets[b, t]`` is the token the model must predict from ``tokens[b, : t + 1]``, or ``-100`` where the
    position is not scored. For ``"copy"`` and ``"reverse"``, ``n = (seq_len - 1) // 2`` content tokens are
    followed by the separator and their copy (reversed for ``"reverse"``); an even ``seq_len`` ends with one
    unscored padding separator. For ``"kv_recall"``, ``seq_len = 4n``: keys are the ids ``0 .. num_keys - 1``
    (``n`` distinct ones per sequence), values the ids ``num_keys .. vocab_size - 1``; ``n`` pairs, then ``n``
    queries (keys drawn from the pairs, with repetition) each followed by its value; only the query keys'
    positions are scored.

    Args:
        task: one of :data:`TASKS`.
        batch_size: number of sequences.
        seq_len: tokens per sequence (at least ``lag + 1`` for ``"lag_copy"``, 3 for the others).
        vocab_size: number of token ids (at least 2, and 3 for ``"copy"``/``"reverse"``).
        generator: the seeded CPU generator the tokens are drawn from.
        lag: the lag :math:`\\ell` of ``"lag_copy"``.
        num_keys: how many of the ids are keys in ``"kv_recall"`` (default ``vocab_size // 2``); at least
            ``seq_len // 4``, and fewer than ``vocab_size``.
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
    if task == "kv_recall":
        return _kv_recall_batch(batch_size, seq_len, vocab_size, num_keys, generator)
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


def _kv_recall_batch(
    batch_size: int, seq_len: int, vocab_size: int, num_keys: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    num_keys = vocab_size // 2 if num_keys is None else check_positive_int("num_keys", num_keys)
    n = seq_len // 4
    if seq_len % 4 or not 1 <= n <= num_keys < vocab_size:
        raise ValueError(
            "kv_recall needs seq_len = 4n with 1 <= n <= num_keys < vocab_size (n distinct keys, and at "
            f"least one value id), got seq_len={seq_len}, num_keys={num_keys}, vocab_size={vocab_size}"
        )
    keys = torch.rand(batch_size, num_keys, generator=generator).argsort(dim=-1)[:, :n]
    values = num_keys + torch.randint(0, vocab_size - num_keys, (batch_size, n), generator=generator)
    asked = torch.randint(0, n, (batch_size, n), generator=generator)
    tokens = torch.empty(batch_size, seq_len, dtype=torch.int64)
    tokens[:, 0 : 2 * n : 2], tokens[:, 1 : 2 * n : 2] = keys, values
    tokens[:, 2 * n :: 2], tokens[:, 2 * n + 1 :: 2] = keys.gather(1, asked), values.gather(1, asked)
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, 2 * n :: 2] = tokens[:, 2 * n + 1 :: 2]  # at each query key, its value
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
    num_keys: int | None = None,
    progress: bool = True,
    after_step: Callable[[int, float], None] | None = None,
    warmup_steps: int | None = None,
) -> list[float]:
    """Train ``model`` (tokens ``[B, T]`` to logits ``[B, T, vocab]``) on a task with AdamW; return losses.

    Cross-entropy on the scored positions, a constant learning rate after a linear warm-up over the first
    ``warmup_steps`` steps (default: a tenth of the steps), gradients clipped to norm 1. Batches come from
    ``torch.Generator().manual_seed(seed)`` and are moved to the device of the model's parameters. A progress
    bar (tqdm) is shown when ``progress`` is true; the environment variable ``TQDM_DISABLE=1`` turns it off,
    as the tests do.

    ``after_step(step, loss)``, if given, is called after every optimiser step (``step`` counts from 1), for
    example to evaluate the model during a fine-tune; the model is put back in training mode after it. With
    ``warmup_steps`` given, a shorter run is exactly the beginning of a longer one with the same arguments.
    """
    steps = check_positive_int("steps", steps)
    lr = check_positive_float("lr", lr)
    if after_step is not None and not callable(after_step):
        raise TypeError(f"after_step must be callable or None, got {type(after_step).__name__}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10) if warmup_steps is None else check_positive_int("warmup_steps", warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    losses = []
    model.train()
    for step in _progress(range(1, steps + 1), enabled=progress, description=f"training on {task}"):
        tokens, targets = make_task_batch(
            task,
            batch_size=batch_size,
            seq_len=seq_len,
            vocab_size=vocab_size,
            generator=generator,
            lag=lag,
            num_keys=num_keys,
        )
        logits = model(tokens.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(step, losses[-1])
            model.train()
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
    num_keys: int | None = None,
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
            task,
            batch_size=batch_size,
            seq_len=seq_len,
            vocab_size=vocab_size,
            generator=generator,
            lag=lag,
            num_keys=num_keys,
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


def with_rope_scaling(
    model: nn.Module,
    scaling: Mapping[str, object] | None,
    *,
    base: float = 10000.0,
    seq_len: int | None = None,
) -> nn.Module:
    r"""Return a copy of a trained RoPE model whose rotations use a context-extension method's frequencies.

    Every :class:`~posenc_lib.rope.RotaryEmbedding` in the copy is replaced by one with the same head width,
    layout and rotary width and with the frequencies :math:`\theta'_c` and the factor on cosine and sine
    that :func:`~posenc_lib.rope_scaling.rope_frequencies` returns for ``scaling`` at ``seq_len``. The weights
    are copied unchanged and ``model`` itself is not modified: this is how a ``rope_scaling`` block is applied
    to a trained checkpoint. A module shared by several layers stays shared in the copy.

    Args:
        model: a module that contains at least one ``RotaryEmbedding``, for example a
            :class:`~posenc_lib.transformer.TinyDecoder` built with ``encoding="rope"``, or a
            ``RotaryEmbedding`` itself.
        scaling: a Hugging Face ``rope_scaling`` dict (``rope_type`` ``"linear"``, ``"dynamic"``, ``"yarn"``,
            ``"llama3"``, ``"longrope"``), or ``None`` for plain RoPE.
        base: the base :math:`b` the model was trained with.
        seq_len: the sequence length the frequencies are computed for (read by ``"dynamic"`` and
            ``"longrope"``, whose frequencies depend on it).

    Returns:
        The modified copy.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` has no ``RotaryEmbedding``, or one of them does not use the plain frequencies
            :math:`b^{-2c/r}` with a factor of 1 (a model that is already scaled is refused, so that two
            scalings are never applied on top of each other), or ``scaling`` is invalid.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scaled = copy.deepcopy(model)
    replacements: dict[int, RotaryEmbedding] = {}
    # remove_duplicate=False: a module shared by several layers is found under each of its names
    found = [
        (name, m)
        for name, m in scaled.named_modules(remove_duplicate=False)
        if isinstance(m, RotaryEmbedding)
    ]
    for name, rope in found:
        if id(rope) not in replacements:
            plain = rope_inverse_frequencies(rope.rotary_dim, base=base)
            if rope.attention_factor != 1.0 or not torch.allclose(rope.inv_freq, plain, rtol=1e-12, atol=0):
                raise ValueError(
                    f"{name or 'model'} does not use plain RoPE frequencies with base {base}; pass the base "
                    "the model was trained with, and a model that has not been scaled already"
                )
            inv_freq, attention_factor = rope_frequencies(
                rope.rotary_dim, base=base, scaling=scaling, seq_len=seq_len
            )
            replacements[id(rope)] = RotaryEmbedding(
                rope.dim,
                layout=rope.layout,
                rotary_dim=rope.rotary_dim,
                inv_freq=inv_freq,
                attention_factor=attention_factor,
            )
        if not name:  # the model is itself a RotaryEmbedding
            return replacements[id(rope)]
        parent, _, attribute = name.rpartition(".")
        setattr(scaled.get_submodule(parent), attribute, replacements[id(rope)])
    if not replacements:
        raise ValueError("model has no RotaryEmbedding module to rescale")
    return scaled


def load_results(name: str) -> dict:
    """Return a results file that ships with posenc_lib, as the JSON object its script wrote.

    Some measurements take too long for a notebook; a script in the repository's ``experiments/`` folder makes
    them and writes a results file (settings, environment, measurements) into ``posenc_lib/data/``, which is
    installed with the package, so a chapter can plot it wherever posenc_lib is installed.

    Args:
        name: the file's name without ``.json``, one of :data:`RESULTS`.

    Returns:
        The parsed JSON object.

    Raises:
        ValueError: If ``name`` is not one of :data:`RESULTS`.
    """
    check_choice("name", name, RESULTS)
    text = resources.files("posenc_lib").joinpath("data", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


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
