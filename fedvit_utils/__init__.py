"""fedvit_utils: federated ViT training plus secret-key image and model encryption.

Implements Nagamori & Kiya, "Combined Use of Federated Learning and Image Encryption for
Privacy-Preserving Image Classification with Vision Transformer" (see ../shared/paper or the README).
"""

__version__ = "0.1.0"
