# Kernels of this project's venv (`make venv` copies this file to .venv/etc/ipython/, which IPython reads).
# A kernel started by plain papermill or nbval is given no CurveZMQ keys (jupyter_client's default
# transport_encryption is "disabled"), so ipykernel logs "Kernel is running over TCP without encryption"
# into every run's output. The kernel listens on 127.0.0.1 with an owner-only connection file; the
# study runner and `make lab` do encrypt (transport_encryption=auto). Only that one line is dropped.
import logging


class _NoPlainTcpNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "running over TCP without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_NoPlainTcpNotice())
