"""fedvit as a Flower app: fedvit_utils' training, FedAvg and Eq. 14 check across processes and machines.

`task` holds what server and clients share, `client_app` and `server_app` are the Flower roles,
`executor` keeps a process-isolated SuperNode's ClientApp warm, `launch` starts and stops the processes.
"""
