"""Bradley-Terry pairwise loss for a CrossEncoder reward model, in the style of sentence-transformers' losses."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.model import CrossEncoder
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn


class BradleyTerryLoss(nn.Module):
    def __init__(self, model: CrossEncoder, margin_scale: float = 0.0) -> None:
        """Mean of ``weight * -log sigmoid(r(q, chosen) - r(q, rejected) - margin_scale * margin)``.

        Under the Bradley-Terry model P(chosen > rejected | q) = sigmoid(r(q, chosen) - r(q, rejected)),
        so this is the negative log-likelihood of the human judgements. A positive ``margin_scale``
        requires a larger reward gap on strongly preferred pairs (the margin term of Llama 2's reward
        model, also in TRL's ``RewardTrainer``).

        Args:
            model: A CrossEncoder with ``num_labels=1``; its raw logit is the reward r(q, d).
            margin_scale: Multiplier of the per-pair judgement margin; 0 gives the plain loss.

        Requirements:
            1. The model has one output label.
            2. Inputs are (query, chosen, rejected) triplets.

        Inputs:
            +---------------------------------+----------------------------------------------+------------------+
            | Inputs                          | Labels                                       | Model labels     |
            +=================================+==============================================+==================+
            | (query, chosen, rejected)       | none, margins of shape (B,), or              | 1                |
            |                                 | (margins, weights), each of shape (B,)       |                  |
            +---------------------------------+----------------------------------------------+------------------+

        Example:
            ::

                model = CrossEncoder("path/to/minilm", num_labels=1)
                loss = BradleyTerryLoss(model, margin_scale=0.1)
                value = loss([["q"], ["good answer"], ["bad answer"]], (torch.tensor([2.0]), torch.ones(1)))
                value.backward()

        Raises:
            ValueError: the model is not a CrossEncoder with one output label.
        """
        super().__init__()
        if not isinstance(model, CrossEncoder):
            raise ValueError(f"{type(self).__name__} expects a model of type CrossEncoder, got {type(model)}")
        if model.num_labels != 1:
            raise ValueError(f"{type(self).__name__} expects a model with 1 output label, got {model.num_labels}")
        if margin_scale < 0:
            raise ValueError(f"{type(self).__name__} expects margin_scale >= 0, got {margin_scale}")
        self.model = model
        self.margin_scale = margin_scale
        self.last_rewards: tuple[Tensor, Tensor] | None = None

    def forward(self, inputs: list[list[str]], labels: Tensor | tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Return the mean (weighted) loss of a batch; keeps the rewards in ``last_rewards`` for logging.

        Args:
            inputs: ``[queries, chosen, rejected]``, three lists of B strings.
            labels: None, margins (B,), or a (margins, weights) tuple; NaN margins count as 0.
        """
        queries, chosen, rejected = inputs
        if not len(queries) == len(chosen) == len(rejected):
            raise ValueError(
                f"queries, chosen and rejected must have one length, got {len(queries)}, {len(chosen)}, {len(rejected)}"
            )
        batch = len(queries)
        # One forward pass over 2B (query, text) rows: the first B are chosen, the last B rejected.
        pairs = list(zip(queries, chosen, strict=True)) + list(zip(queries, rejected, strict=True))
        features = batch_to_device(self.model.preprocess(pairs), self.model.device)
        rewards = self.model(features)["scores"].view(-1).float()
        chosen_rewards, rejected_rewards = rewards[:batch], rewards[batch:]

        margins, weights = _split_labels(labels, batch, rewards.device)
        difference = chosen_rewards - rejected_rewards - self.margin_scale * margins
        losses = -nn.functional.logsigmoid(difference)
        self.last_rewards = (chosen_rewards.detach(), rejected_rewards.detach())
        return (losses * weights).sum() / weights.sum()

    def get_config_dict(self) -> dict[str, float]:
        return {"margin_scale": self.margin_scale}


def _split_labels(labels: Tensor | tuple[Tensor, Tensor] | None, batch: int, device: torch.device
                  ) -> tuple[Tensor, Tensor]:
    margins = torch.zeros(batch, device=device)
    weights = torch.ones(batch, device=device)
    if isinstance(labels, tuple):
        margins, weights = labels[0].to(device).float(), labels[1].to(device).float()
    elif labels is not None:
        margins = labels.to(device).float()
    return torch.nan_to_num(margins, nan=0.0), weights
