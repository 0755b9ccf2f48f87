"""fedvit as a Flower app: fedvit_utils' training, FedAvg and Eq. 14 check across processes and machines.

`config` reads the run config, `task` holds what a client does, `client_app` and `server_app` are the
Flower roles, `launch` starts and stops the processes; `fast_nodes` is the opt-in on Flower's internals.
"""
