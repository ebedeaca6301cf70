"""Builds the encoder and decoder TrainStates and the model that pairs them."""

import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

import kernels
from config import Config
from modelBlocks import (
    Carries,
    Decoder,
    Encoder,
    FreeRunningDecoder,
    TeacherForcedDecoder,
    denormalize,
    normalize,
)

Array = jax.Array


def make_schedule(config: Config, total_steps: int) -> optax.Schedule:
    """The learning rate by step; warmup takes the first 5% of the steps."""
    return _schedule(config.lr, config.lr_schedule, total_steps)


def make_optimizer(config: Config, total_steps: int):
    """Adam on the configured schedule, gradients clipped by global norm.

    Each TrainState has one, so the encoder's and the decoder's gradients
    are clipped each by its own norm.
    """
    return _optimizer(
        config.lr, config.lr_schedule, config.clip_norm, total_steps
    )


# Cached, so that equal settings give the very same optimizer: jit compares
# a TrainState's optimizer by identity, and a new one would recompile.
@functools.cache
def _schedule(lr: float, kind: str, total_steps: int) -> optax.Schedule:
    steps = max(total_steps, 1)
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "warmup-cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, max(steps // 20, 1), steps
        )
    return optax.cosine_decay_schedule(lr, steps)


@functools.cache
def _optimizer(lr: float, kind: str, clip_norm: float, total_steps: int):
    adam = optax.adam(learning_rate=_schedule(lr, kind, total_steps))
    if clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(clip_norm), adam)
    return adam


@functools.cache
def _module(kind: type, **fields):
    # One instance per setting, for the reason _optimizer is cached.
    return kind(**fields)


def uses_fused_kernel(config: Config) -> bool:
    """Whether the LSTM layers run by the fused C++ kernel: asked for, and
    buildable here (see `kernels.available`)."""
    return config.kernel == "fused" and kernels.available()


def create_train_states(
    config: Config, key: Array, total_steps: int
) -> tuple[TrainState, TrainState]:
    """Initializes the encoder and the decoder from two keys split off `key`.

    `total_steps` is the length of the learning-rate schedule.
    """
    encoder_key, decoder_key = jax.random.split(key)
    encoder = _module(
        Encoder,
        hidden=config.hidden,
        layers=config.layers,
        bidirectional=config.encoder == "bi",
        merge=config.merge,
        dropout=config.dropout,
        fused=uses_fused_kernel(config),
    )
    decoder = _module(
        Decoder, hidden=config.decoder_hidden, layers=config.layers
    )

    encoder_params, decoder_params = _init_params(
        encoder, decoder, config.in_len, encoder_key, decoder_key
    )
    return (
        TrainState.create(
            apply_fn=encoder.apply,
            params=encoder_params,
            tx=make_optimizer(config, total_steps),
        ),
        TrainState.create(
            apply_fn=decoder.apply,
            params=decoder_params,
            tx=make_optimizer(config, total_steps),
        ),
    )


# Under jit, initializing is one compiled program; run eagerly, Flax's
# init would dispatch every operation of the LSTM scans one by one.
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_params(encoder, decoder, in_len: int, encoder_key, decoder_key):
    window = jnp.zeros((1, in_len), jnp.float32)
    encoder_params = encoder.init(encoder_key, window)["params"]
    carries = encoder.apply({"params": encoder_params}, window)
    previous = jnp.zeros((1,), jnp.float32)
    decoder_params = decoder.init(decoder_key, carries, previous)["params"]
    return encoder_params, decoder_params


class Seq2Seq(struct.PyTreeNode):
    """The encoder and decoder states held as one model.

    Windows come in and forecasts go out in the series' units; everything
    in between is per-window normalized (see `modelBlocks.normalize`).
    """

    encoder: TrainState
    decoder: TrainState
    config: Config = struct.field(pytree_node=False)
    std_floor: float = struct.field(pytree_node=False)

    @property
    def params(self):
        return self.encoder.params, self.decoder.params

    def with_params(self, params) -> "Seq2Seq":
        encoder_params, decoder_params = params
        return self.replace(
            encoder=self.encoder.replace(params=encoder_params),
            decoder=self.decoder.replace(params=decoder_params),
        )

    def apply_gradients(self, grads) -> "Seq2Seq":
        encoder_grads, decoder_grads = grads
        return self.replace(
            encoder=self.encoder.apply_gradients(grads=encoder_grads),
            decoder=self.decoder.apply_gradients(grads=decoder_grads),
        )

    def encode(
        self, window: Array, *, dropout_key: Array | None = None
    ) -> Carries:
        """Normalized window [batch, in_len] -> one carry per layer.

        Dropout is on when a `dropout_key` is given.
        """
        train = dropout_key is not None
        rngs = {"dropout": dropout_key} if train else {}
        return self.encoder.apply_fn(
            {"params": self.encoder.params}, window, train=train, rngs=rngs
        )

    def decode_step(
        self, carries: Carries, previous: Array
    ) -> tuple[Carries, Array]:
        """One decoder step: previous value [batch] -> next value [batch]."""
        return self.decoder.apply_fn(
            {"params": self.decoder.params}, carries, previous
        )

    def decode(
        self, carries: Carries, inputs: Array, use_truth: Array | None = None
    ) -> Array:
        """Teacher-forced (or scheduled-sampling) decoding, normalized values.

        Args:
          carries: the encoder's carries, one per layer.
          inputs: [batch, time], the true value before each step to predict.
          use_truth: [batch, time] bool, where a step is fed inputs[:, i]
            rather than the model's own previous prediction; all True (the
            default) is teacher forcing, which runs over the sequence
            rather than step by step. Step 0 always gets inputs[:, 0],
            the window's last value: there is no prediction before it.

        Returns:
          Predictions [batch, time], step i made from inputs[:, : i + 1].
        """
        if use_truth is None:
            decoder = self._decoder_as(
                TeacherForcedDecoder, fused=uses_fused_kernel(self.config)
            )
            return decoder(carries, inputs)[1]

        def step(state, given):
            carries, predicted = state
            truth, fed_truth = given
            previous = jnp.where(fed_truth, truth, predicted)
            carries, value = self.decode_step(carries, previous)
            return (carries, value), value

        state = (carries, inputs[:, 0])
        _, outputs = jax.lax.scan(step, state, (inputs.T, use_truth.T))
        return outputs.T

    def _decoder_as(self, kind: type, **fields):
        """The decoder's parameters applied by another module `kind`, one
        that runs all its steps at once."""
        module = _module(
            kind,
            hidden=self.config.decoder_hidden,
            layers=self.config.layers,
            **fields,
        )
        return functools.partial(module.apply, {"params": self.decoder.params})

    def decode_free(self, carries: Carries, first: Array, steps: int) -> Array:
        """Free-running decoding: each prediction is the next step's input.

        Args:
          carries: the encoder's carries, one per layer.
          first: [batch], the last value of the window.
          steps: how many values to generate.

        Returns:
          [batch, steps] normalized values.
        """
        if uses_fused_kernel(self.config):
            return self._decoder_as(FreeRunningDecoder)(carries, first, steps)

        def step(state, _):
            carries, previous = state
            carries, value = self.decode_step(carries, previous)
            return (carries, value), value

        _, outputs = jax.lax.scan(step, (carries, first), length=steps)
        return outputs.T

    def teacher_forced(
        self,
        context: Array,
        target: Array,
        *,
        dropout_key: Array | None = None,
        use_truth: Array | None = None,
    ) -> tuple[Array, Array]:
        """Predictions and targets of a batch, both normalized by the window.

        Args:
          context: [batch, in_len] and target: [batch, out_len], in the
            series' units.
          dropout_key: turns dropout on.
          use_truth: [batch, out_len] bool, see `decode`; None is teacher
            forcing throughout.
        """
        window, mean, std = normalize(context, self.std_floor)
        target = (target - mean) / std
        carries = self.encode(window, dropout_key=dropout_key)
        inputs = jnp.concatenate([window[:, -1:], target[:, :-1]], axis=1)
        return self.decode(carries, inputs, use_truth), target

    def generate(self, context: Array, horizon: int) -> Array:
        """Forecasts `horizon` values after each window, free-running.

        Horizons past the trained output length are made chunk by chunk:
        after each chunk the newest `in_len` values, forecasts included,
        are normalized and encoded afresh, so every chunk starts from a
        window like the ones seen in training.

        Args:
          context: [batch, in_len] in the series' units.
          horizon: number of values to forecast (static).

        Returns:
          [batch, horizon] in the series' units.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        out_len = self.config.out_len
        chunks = math.ceil(horizon / out_len)

        def forecast_chunk(context, _):
            window, mean, std = normalize(context, self.std_floor)
            carries = self.encode(window)
            chunk = self.decode_free(carries, window[:, -1], out_len)
            chunk = denormalize(chunk, mean, std)
            context = jnp.concatenate([context, chunk], axis=1)
            return context[:, out_len:], chunk

        _, chunks = jax.lax.scan(forecast_chunk, context, length=chunks)
        forecast = chunks.transpose(1, 0, 2).reshape(context.shape[0], -1)
        return forecast[:, :horizon]


def create_model(
    config: Config, key: Array, total_steps: int, std_floor: float
) -> Seq2Seq:
    """The model for `config`, freshly initialized from `key`."""
    encoder, decoder = create_train_states(config, key, total_steps)
    return Seq2Seq(encoder, decoder, config, std_floor)
