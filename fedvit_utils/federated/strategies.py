"""How a round turns client updates into the next global model: FedAvg and FedSGD behind one interface.

Both strategies of McMahan et al. 2017 (the paper's [5]) share the round of `server.run_federated`:
every selected client reports an update with its number of examples, the server folds the updates
into their example-weighted mean (`aggregation.FedAvg`), and the strategy applies that mean to the
global model. They differ in what a client sends and what the server does with the mean:

``fedavg``  a client trains `local_epochs` epochs from the global weights and sends its weights; the
            mean of the weights is the new global model (the paper, Sec. 4.1).
``fedsgd``  a client sends its full-batch gradient at the global weights; the server takes one step
            of its own SGD optimizer with the mean gradient (the optimizer's momentum is server state).

A new strategy is a `Strategy` subclass with a `name`, registered with `register_strategy`; profiles
then accept ``aggregation: <name>``. No torch import here: profiles check names without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from torch import nn

    from ..data import ImageData
    from .client import ClientUpdate, LocalTraining, StateDict


class Strategy:
    """One way to run a round; `run_federated` makes one per run with the run's trainer and global model."""

    name = ""
    client_holds_local_model = True  # after its update, the model object holds the client's trained weights

    def __init__(self, trainer: LocalTraining, model: nn.Module) -> None:
        self.trainer = trainer
        self.model = model

    def client_update(self, global_state: StateDict, data: ImageData, round_index: int, client: int
                      ) -> ClientUpdate:
        """What one client reports for this round, computed on `self.model` from the global weights."""
        raise NotImplementedError(f"strategy {self.name!r} does not say what a client sends.")

    def images_trained(self, update: ClientUpdate) -> int:
        """Images a client's update passed through training (throughput records)."""
        return update.num_examples

    def integrate(self, mean: StateDict) -> None:
        """Apply the clients' example-weighted mean update to the global model (`self.model`)."""
        raise NotImplementedError(f"strategy {self.name!r} does not say how the mean update is applied.")

    def state_dict(self) -> dict | None:
        """Server state a resumed run needs besides the global weights (None: nothing)."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore what `state_dict` returned."""


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make a Strategy subclass available to profiles by its `name` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or not cls.name:
        raise TypeError(f"{cls!r} is not a named Strategy subclass: subclass strategies.Strategy and set `name`.")
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} is already registered; choose another name.")
    STRATEGIES[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy called `name`; ValueError names the registered ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown aggregation {name!r}; choose one of {tuple(STRATEGIES)} "
                         f"(or register one: federated.strategies.Strategy).")
    return STRATEGIES[name]


@register_strategy
class FedAvgStrategy(Strategy):
    """FedAvg: clients train locally from the global weights; the new global model is their weighted mean."""

    name = "fedavg"

    def client_update(self, global_state: StateDict, data: ImageData, round_index: int, client: int
                      ) -> ClientUpdate:
        """`local_epochs` of local training from the global weights (ClientUpdate of Alg. 1)."""
        return self.trainer.fit(self.model, global_state, data, round_index, client)

    def images_trained(self, update: ClientUpdate) -> int:
        """Every local epoch passes the client's images once."""
        return update.num_examples * self.trainer.local_epochs

    def integrate(self, mean: StateDict) -> None:
        """The mean of the clients' weights becomes the global model."""
        self.model.load_state_dict(mean)


@register_strategy
class FedSGDStrategy(Strategy):
    """FedSGD: clients send full-batch gradients; the server steps its own optimizer with their mean."""

    name = "fedsgd"
    client_holds_local_model = False  # a gradient leaves the global weights in place: nothing local to score

    def __init__(self, trainer: LocalTraining, model: nn.Module) -> None:
        super().__init__(trainer, model)
        self.optimizer = trainer.optimizer(model)

    def client_update(self, global_state: StateDict, data: ImageData, round_index: int, client: int
                      ) -> ClientUpdate:
        """The client's mean gradient over all its data at the global weights."""
        return self.trainer.gradient(self.model, global_state, data)

    def integrate(self, mean: StateDict) -> None:
        """One step of the server's optimizer with the mean gradient."""
        apply_gradient(self.model, mean, self.optimizer)

    def state_dict(self) -> dict | None:
        """The server optimizer's state (its momentum buffers)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the server optimizer's state (a resumed run continues its momentum)."""
        self.optimizer.load_state_dict(state)


def apply_gradient(model: nn.Module, grads: StateDict, optimizer) -> None:
    """Server step of FedSGD: set the averaged gradient on the global model and step its optimizer."""
    params = dict(model.named_parameters())
    missing = set(params) - set(grads)
    if missing:
        raise ValueError(f"averaged gradient lacks {sorted(missing)[:5]}: clients trained another model.")
    for name, p in params.items():
        p.grad = grads[name].to(p.device, p.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
