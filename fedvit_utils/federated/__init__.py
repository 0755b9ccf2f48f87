"""Federated training (FedAvg / FedSGD, McMahan et al. 2017, the paper's [5]) and its centralized baseline.

aggregation   the server's arithmetic: the float64 example-weighted mean of client updates
strategies    FedAvg and FedSGD behind one interface (what a client sends, how the mean is applied)
client        local training: what a client does with the global weights each round
server        rounds: choose clients, train them, integrate, evaluate, checkpoint
centralized   the paper's "Baseline": one model trained on the union of the clients' images
checkpoints   a training run's folder: resume, per-step checkpoints, history records
"""
