"""One process of the Flower baseline: its server (FedAvg) or a client training one host's share."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from flwr.client import NumPyClient
from flwr.common import FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters
from flwr.compat.client.app import start_client
from flwr.server import ServerConfig, start_server
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from meshmind.federation import HostData
from meshmind.fl import Params, TaskSession

Arrays = list[npt.NDArray[Any]]


def to_arrays(params: Params) -> Arrays:
    """The trainable tensors as Flower carries them, in name order."""
    return [params[name].detach().cpu().numpy() for name in sorted(params)]


def from_arrays(names: list[str], arrays: Arrays) -> Params:
    return {name: torch.from_numpy(np.array(a)) for name, a in zip(names, arrays, strict=True)}


class HostClient(NumPyClient):
    """One host's local training, exactly as a meshmind trainer does it."""

    def __init__(self, session: TaskSession, epochs: int, lr: float) -> None:
        self.session = session
        self.names = sorted(session.initial)
        self.epochs = epochs
        self.lr = lr

    def fit(
        self, parameters: Arrays, config: dict[str, Scalar]
    ) -> tuple[Arrays, int, dict[str, Scalar]]:
        params = from_arrays(self.names, parameters)
        trained, result = self.session.train(
            params, epochs=self.epochs, lr=self.lr, proximal_mu=0.0
        )
        return to_arrays(trained), result.examples, {}


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, noting each round's start and the bytes its parameters move."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.bytes: dict[int, int] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self.started[server_round] = time.perf_counter()
        chosen: list[tuple[ClientProxy, FitIns]] = super().configure_fit(
            server_round, parameters, client_manager
        )
        self.bytes[server_round] = sum(len(t) for t in parameters.tensors) * len(chosen)
        return chosen

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        up = sum(len(t) for _, res in results for t in res.parameters.tensors)
        self.bytes[server_round] = self.bytes.get(server_round, 0) + up
        aggregated: tuple[Parameters | None, dict[str, Scalar]] = super().aggregate_fit(
            server_round, results, failures
        )
        return aggregated


def serve(args: argparse.Namespace) -> None:
    session = TaskSession(args.task, args.seed, HostData(0, args.clients))
    names = sorted(session.initial)
    rounds: list[dict[str, float]] = []
    strategy: TimedFedAvg

    def evaluate(
        server_round: int, parameters: Arrays, config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        metrics = session.evaluate(from_arrays(names, parameters))
        if server_round > 0:
            started = strategy.started[server_round]
            rounds.append(
                {
                    "round": server_round,
                    "accuracy": metrics["accuracy"],
                    "wall_s": time.perf_counter() - started,
                    "bytes": strategy.bytes[server_round],
                }
            )
        return metrics["loss"], {"accuracy": metrics["accuracy"]}

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.clients,
        min_available_clients=args.clients,
        initial_parameters=ndarrays_to_parameters(to_arrays(session.initial)),
        evaluate_fn=evaluate,
    )
    start_server(
        server_address=f"127.0.0.1:{args.port}",
        config=ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
    )
    Path(args.out).write_text(json.dumps({"rounds": rounds}))


def client(args: argparse.Namespace) -> None:
    session = TaskSession(args.task, args.seed, HostData(args.index, args.clients))
    session.data()
    start_client(
        server_address=f"127.0.0.1:{args.port}",
        client=HostClient(session, args.epochs, args.lr).to_client(),
        insecure=True,
    )


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
