"""What the encryption hides, and what breaks it (Nagamori & Kiya, Sec. 3.2-3.3, Eq. 2-14).

The paper shows one encrypted picture (Fig. 2) and states that the scheme protects test images; it
gives no measurement. These modules measure it:

measures              image quality (PSNR/SSIM), key error, block accuracy, normalization, draws;
                      `RecoveredKey`, an attacker's key
visual                visual security per key kind and key part; the key space and why it is not security
wrong_keys            accuracy with another client's key, or without encryption on one side, per key kind
known_plaintext       recovering E_a and the block permutation from known (plain, encrypted) pairs
known_plaintext_draws that attack over random draws of key and known images, so thresholds have odds
key_extraction        reading the key off an encrypted model next to the plain one (Eq. 3, 8), D >= L and D < L
position_embedding    when the position embedding gives the block order away (Eq. 8), and when not
jigsaw                ciphertext only: reassembling block-permuted images
cloud_view            the curious cloud: a key from the statistics of one client's ciphertexts and public images
cloud_relearn         the curious cloud: re-learning the plain embeddings on public images (no key, no query)
cloud_study           those attacks per key kind, key and number of queries, scored against two references

Images are float tensors (B, C, H, W) with pixel values in [0, 1] unless said otherwise.
"""
