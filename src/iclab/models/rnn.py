"""Classic recurrent networks (`model: {name: lstm}` or `gru`): torch.nn.LSTM / torch.nn.GRU between iclab's read-in
and read-out, the RNN baselines of Lee et al. (ICLR 2024).

`layers` stacked recurrent layers of hidden size `width` (batch_first, no dropout, no projection) run over the
prompt's 2n tokens; the read-out at every x-position predicts the y that follows it. A recurrence is causal by
construction and takes prompts of any length. Weights keep PyTorch's initialisation (U(-1/sqrt(width), 1/sqrt(width))).

Muon trains the input-to-hidden and hidden-to-hidden matrices of every layer (`weight_ih_l*`, `weight_hh_l*`, each
the gates stacked: 4 x width rows for the LSTM, 3 x width for the GRU, orthogonalised as one matrix); the biases,
read-in and read-out stay with AdamW. They are parameters of the fused RNN module, not nn.Linear weights, so the
model names them itself.

FLOPs are counted analytically (`forward_flops`), because torch's FlopCounterMode does not see the fused LSTM
kernel (it counts 0 for nn.LSTM on CPU). The convention is training/flops.py's: 2 FLOPs per multiply-add of the
matrix products, which here are the gate products, gates x width x (input + width) multiply-adds per token and
layer; the gates' elementwise work is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from .base import MODELS, ICLModel, ModelConfig


@dataclass
class RNNConfig(ModelConfig):
    """A torch.nn recurrent network: layers -> num_layers, width -> hidden_size (subclasses name the cell)."""

    module: ClassVar[type[nn.RNNBase]]  # nn.LSTM or nn.GRU
    gates: ClassVar[int]  # rows of a layer's weight matrices, in units of width

    def build(self, dims: int, max_points: int) -> RNNModel:
        return RNNModel(self, dims, max_points)


@MODELS.register("lstm")
@dataclass
class LSTMConfig(RNNConfig):
    """torch.nn.LSTM (Hochreiter & Schmidhuber 1997). layers -> num_layers, width -> hidden_size (and input_size);
    batch_first, no dropout; Muon trains weight_ih_l* and weight_hh_l*."""

    name: str = "lstm"
    module: ClassVar[type[nn.RNNBase]] = nn.LSTM
    gates: ClassVar[int] = 4  # input, forget, cell, output


@MODELS.register("gru")
@dataclass
class GRUConfig(RNNConfig):
    """torch.nn.GRU (Cho et al. 2014). layers -> num_layers, width -> hidden_size (and input_size); batch_first,
    no dropout; Muon trains weight_ih_l* and weight_hh_l*."""

    name: str = "gru"
    module: ClassVar[type[nn.RNNBase]] = nn.GRU
    gates: ClassVar[int] = 3  # reset, update, new


class RNNModel(ICLModel):
    """iclab's read-in -> a stacked torch.nn LSTM or GRU -> iclab's read-out."""

    def __init__(self, config: RNNConfig, dims: int, max_points: int):
        super().__init__(config, dims, max_points)
        self.read_in = nn.Linear(dims, config.width)
        self.rnn = config.module(config.width, config.width, num_layers=config.layers, batch_first=True)
        self.read_out = nn.Linear(config.width, 1)

    def sequence(self, h: Tensor) -> Tensor:
        return self.rnn(h)[0]

    def is_hidden_matrix(self, name: str, p: nn.Parameter) -> bool:
        return name.startswith(("rnn.weight_ih_l", "rnn.weight_hh_l"))

    def forward_flops(self, points: int) -> int:
        c, tokens = self.config, 2 * points
        gate_products = 2 * c.gates * c.width * (c.width + c.width) * tokens * c.layers  # input and hidden
        return 2 * self.dims * c.width * tokens + gate_products + 2 * c.width * points  # read-in, RNN, read-out
