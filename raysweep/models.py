"""The classifiers a trial trains: an MLP, and a convolutional autoencoder whose latent feeds an MLP head.

Every model answers `training_outputs(x) -> (logits, reconstruction or None)`, so the training loop has one shape for
both, and `classifier_layers()` (the Linear layers of the MLP path, input to output) so penalties can target the first
or the last layer. `forward(x)` returns logits only, which is what a user who loads the model wants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from raysweep.config import TrialConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "selu": nn.SELU,
}
INITS = ("he", "xavier", "default")


class BatchNorm1dAnySize(nn.BatchNorm1d):
    """BatchNorm1d that also trains on a batch of one, as SGD with batch size 1 needs.

    A single example has no batch variance (torch raises; Keras silently outputs beta), so such a batch is normalised
    with the running statistics instead, which keeps the layer informative.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def init_weights(module: nn.Module, *, scheme: str) -> None:
    """He (for ReLU-like nets) or Xavier init of every Linear and conv weight, biases zero; "default" keeps torch's."""
    if scheme == "default":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            if scheme == "he":
                # A transposed conv's weight is (in, out, k, k): torch's "fan_out" is its true fan-in.
                mode = "fan_out" if isinstance(layer, nn.ConvTranspose2d) else "fan_in"
                nn.init.kaiming_normal_(layer.weight, mode=mode, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Flatten, hidden Linear layers (each: activation, optional batch norm, optional dropout), a linear output.

    `batch_norm` and `dropout_after` name hidden layers by number, starting at 1: the seeds' "batch norm after the
    first hidden layer" is batch_norm=(1,). dropout_after=None puts dropout after every hidden layer.
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int],
        activation: str = "relu",
        batch_norm: Sequence[int] = (),
        dropout: float = 0.0,
        dropout_after: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for number, width in enumerate(hidden, start=1):
            layers += [nn.Linear(width_in, width), ACTIVATIONS[activation]()]
            if number in batch_norm:
                layers.append(BatchNorm1dAnySize(width))
            if dropout > 0 and (dropout_after is None or number in dropout_after):
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def training_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.layers(x), None

    def classifier_layers(self) -> list[nn.Linear]:
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]


def _transpose_padding(size_in: int, size_out: int) -> int:
    """output_padding that makes a stride-2, kernel-3, padding-1 transposed conv map size_in back to size_out."""
    return size_out - (2 * size_in - 1)


class ConvAEMLP(nn.Module):
    """A convolutional autoencoder whose latent code feeds an MLP classifier head (the seeds' "CAE_MLP400").

    Encoder: stride-2 3x3 convs (each halves H and W) then a Linear to the latent. Decoder: a Linear back and
    transposed convs to the input size. The reconstruction is compared with the (normalised) input.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        latent_dim: int = 64,
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
        **head_options: object,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        sizes = [(height, width)]  # spatial size after each conv, for the decoder's mirror image
        encoder: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels, strict=True):
            encoder += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        code_h, code_w = sizes[-1]
        flat = channels[-1] * code_h * code_w
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(flat, latent_dim))

        decoder: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.Unflatten(1, (channels[-1], code_h, code_w))]
        outs = (*channels[-2::-1], in_channels)
        for i, (c_in, c_out) in enumerate(zip(channels[::-1], outs, strict=True)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            padding = (_transpose_padding(h_in, h_out), _transpose_padding(w_in, w_out))
            decoder.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=padding))
            if c_out != in_channels:
                decoder.append(ACTIVATIONS[activation]())
        self.decoder = nn.Sequential(*decoder)
        self.head = MLP(in_features=latent_dim, num_classes=num_classes, activation=activation, **head_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)  # (B, latent_dim)
        return self.head(code), self.decoder(code)  # (B, classes), (B, C, H, W)

    def classifier_layers(self) -> list[nn.Linear]:
        return self.head.classifier_layers()


def _build_mlp(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    in_features = input_shape[0] * input_shape[1] * input_shape[2]
    return MLP(in_features=in_features, num_classes=num_classes, **_head_options(config), activation=config.activation)


def _build_cae_mlp(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return ConvAEMLP(
        input_shape=input_shape,
        num_classes=num_classes,
        latent_dim=config.latent_dim,
        channels=config.channels,
        activation=config.activation,
        **_head_options(config),
    )


def _head_options(config: TrialConfig) -> dict:
    return {
        "hidden": config.hidden,
        "batch_norm": config.batch_norm,
        "dropout": config.dropout,
        "dropout_after": config.dropout_after,
    }


MODELS = {"mlp": _build_mlp, "cae_mlp": _build_cae_mlp}


def build_model(config: TrialConfig, *, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The model the config names, initialised by its `init` scheme from the current torch seed."""
    model = MODELS[config.model](config, tuple(input_shape), num_classes)
    init_weights(model, scheme=config.init)
    return model
