"""The seq2seq LSTM forecaster as one torch module, twin of the JAX model."""

import math
from collections.abc import Callable

import torch
from torch import nn

from config import Config

Tensor = torch.Tensor
# (h, c), each [layers, batch, hidden]: what nn.LSTM takes and returns.
Carries = tuple[Tensor, Tensor]
Merge = Callable[[Tensor, Tensor], Tensor]

MERGES: dict[str, Merge] = {
    "concat": lambda forward, backward: torch.cat([forward, backward], -1),
    "sum": lambda forward, backward: forward + backward,
    "mean": lambda forward, backward: 0.5 * (forward + backward),
    "max": torch.maximum,
}


def normalize(
    context: Tensor, std_floor: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Scales each window [batch, in_len] to zero mean and unit spread.

    Returns the scaled window and the mean and spread [batch, 1], as
    `modelBlocks.normalize` does.
    """
    mean = context.mean(dim=-1, keepdim=True)
    spread = context.std(dim=-1, keepdim=True, correction=0)
    std = torch.clamp(spread, min=std_floor)
    return (context - mean) / std, mean, std


def denormalize(values: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return values * std + mean


class Seq2Seq(nn.Module):
    """Encoder LSTMs, a decoder LSTM and a linear head, per-window normalized.

    Windows come in and forecasts go out in the series' units. The encoder
    is one single-layer nn.LSTM per layer because a bidirectional layer's
    two directions are merged before they feed the next layer.
    """

    def __init__(self, config: Config, std_floor: float):
        super().__init__()
        self.config = config
        self.std_floor = std_floor
        self.bidirectional = config.encoder == "bi"
        self.merge = MERGES[config.merge]
        width = config.decoder_hidden
        self.encoder = nn.ModuleList(
            nn.LSTM(
                1 if k == 0 else width,
                config.hidden,
                batch_first=True,
                bidirectional=self.bidirectional,
            )
            for k in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = nn.LSTM(1, width, config.layers, batch_first=True)
        self.head = nn.Linear(width, 1)
        init_like_flax(self)

    def encode(self, window: Tensor) -> Carries:
        """Normalized window [batch, in_len] -> carries of every layer.

        Decoder layer k starts from encoder layer k's final (h, c).
        Dropout between layers is on in training mode.
        """
        x = window[..., None]  # [batch, in_len, 1]
        hs, cs = [], []
        for k, lstm in enumerate(self.encoder):
            if k > 0:
                x = self.dropout(x)
            x, (h, c) = lstm(x)  # h, c: [directions, batch, hidden]
            if self.bidirectional:
                x = self.merge(*x.chunk(2, dim=-1))
                h, c = self.merge(h[0], h[1]), self.merge(c[0], c[1])
            else:
                h, c = h[0], c[0]
            hs.append(h)
            cs.append(c)
        return torch.stack(hs), torch.stack(cs)

    def decode(
        self,
        carries: Carries,
        inputs: Tensor,
        use_truth: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced (or scheduled-sampling) decoding, normalized values.

        Args:
          carries: from `encode`.
          inputs: [batch, time], the true value before each step to predict.
          use_truth: [batch, time] bool, where a step is fed inputs[:, i]
            rather than the previous prediction; None is teacher forcing.
            Step 0 always gets inputs[:, 0].

        Returns:
          Predictions [batch, time], step i made from inputs[:, : i + 1].
        """
        if use_truth is None:
            # Every input is known up front: one call over the whole time.
            outputs, _ = self.decoder(inputs[..., None], carries)
            return inputs + self.head(outputs)[..., 0]

        predictions = []
        for i in range(inputs.shape[1]):
            previous = inputs[:, 0]
            if i > 0:
                previous = torch.where(
                    use_truth[:, i], inputs[:, i], predictions[-1]
                )
            previous, carries = self.decode_step(carries, previous)
            predictions.append(previous)
        return torch.stack(predictions, dim=1)

    def decode_step(
        self, carries: Carries, previous: Tensor
    ) -> tuple[Tensor, Carries]:
        """One decoder step: previous value [batch] -> next value [batch]."""
        output, carries = self.decoder(previous[:, None, None], carries)
        return previous + self.head(output[:, 0])[:, 0], carries

    def decode_free(
        self, carries: Carries, first: Tensor, steps: int
    ) -> Tensor:
        """Free-running decoding from first [batch]; returns [batch, steps]."""
        previous, outputs = first, []
        for _ in range(steps):
            previous, carries = self.decode_step(carries, previous)
            outputs.append(previous)
        return torch.stack(outputs, dim=1)

    def teacher_forced(
        self,
        context: Tensor,
        target: Tensor,
        use_truth: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Predictions and targets [batch, out_len], normalized by window.

        Args:
          context: [batch, in_len] and target: [batch, out_len], in the
            series' units.
          use_truth: [batch, out_len] bool, see `decode`.
        """
        window, mean, std = normalize(context, self.std_floor)
        target = (target - mean) / std
        inputs = torch.cat([window[:, -1:], target[:, :-1]], dim=1)
        return self.decode(self.encode(window), inputs, use_truth), target

    def generate(self, context: Tensor, horizon: int) -> Tensor:
        """Forecasts `horizon` values after each window, free-running.

        Horizons past out_len are made chunk by chunk, each from the newest
        in_len values, forecasts included, normalized and encoded afresh.

        Args:
          context: [batch, in_len] in the series' units.

        Returns:
          [batch, horizon] in the series' units.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        out_len = self.config.out_len
        chunks = []
        for _ in range(math.ceil(horizon / out_len)):
            window, mean, std = normalize(context, self.std_floor)
            chunk = self.decode_free(
                self.encode(window), window[:, -1], out_len
            )
            chunk = denormalize(chunk, mean, std)
            chunks.append(chunk)
            context = torch.cat([context, chunk], dim=1)[:, out_len:]
        return torch.cat(chunks, dim=1)[:, :horizon]


def init_like_flax(model: Seq2Seq) -> None:
    """Draws the initial weights as Flax does for the JAX model.

    Input kernels and the head are lecun normal, recurrent kernels
    orthogonal per gate, biases zero, so both sides start from the same
    distribution.
    """
    for name, weight in model.named_parameters():
        if "bias" in name:
            nn.init.zeros_(weight)
        elif "weight_hh" in name:
            for gate in weight.data.chunk(4):
                nn.init.orthogonal_(gate)
        else:  # weight_ih and the head, both [out, in]
            _lecun_normal_(weight)


def _lecun_normal_(weight: Tensor) -> None:
    # Flax draws from a normal truncated at two standard deviations and
    # rescales it so the variance is still 1 / fan_in.
    std = math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    with torch.no_grad():
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
