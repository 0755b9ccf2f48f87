"""Federated training (FedAvg / FedSGD, McMahan et al. 2017, the paper's [5]) and its centralized baseline.

aggregation   the server's arithmetic: example-weighted FedAvg, FedSGD's step
client        local training: what a client does with the global weights each round
server        rounds: choose clients, train them, integrate, evaluate, checkpoint
centralized   the paper's "Baseline": one model trained on the union of the clients' images
checkpoints   a training run's folder: resume, per-step checkpoints, history records
"""
