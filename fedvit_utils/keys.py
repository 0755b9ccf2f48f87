"""Secret keys for block-wise image and ViT model encryption (Nagamori & Kiya, Sec. 3.2).

A key holds the two secrets of the scheme:

* the block permutation ``l_e`` of Eq. (4), which defines ``E_b`` (Eq. 5-6): encrypted block ``i``
  is plain block ``l_e(i)``; stored 0-based as ``block_permutation``;
* the invertible ``L x L`` matrix ``E_a`` of Eq. (2), ``L = p * p * c``, which mixes the pixels of
  every block (Eq. 12: ``b_hat = b E_a^-1``) and is folded into the patch embedding (Eq. 3).

Key kinds differ only in how ``E_a`` is drawn. Each kind is one `KeyKind` object in a registry
(`register_key_kind`, `key_kind`); every module asks that object what follows from the kind (does it
only move pixels, is E_a orthogonal, can a draw be refused, how large is its key space) instead of
comparing names. The registered kinds:

``"permutation"``  a permutation matrix: pixel (and channel) shuffling inside each block, as in the
                   paper's Fig. 2. Encrypted images stay valid images (same values, same range).
``"orthogonal"``   a Haar-random orthogonal matrix: dense and perfectly conditioned (cond = 1).
``"gaussian"``     i.i.d. normal entries, the literal reading of Eq. (2). Its condition number grows
                   with ``L``; a draw whose inverse would lose float32 accuracy is refused.

Nothing printed about a key reveals it: ``repr`` shows its shape and a short fingerprint only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .files import SECRET_MODE, atomic_write

FORMAT_VERSION = 1
# float32 has ~7 significant digits; the round trip through E_a^-1 and E_a amplifies rounding
# error by up to cond(E_a). 1e4 keeps that amplification below 1e-3 relative error in float32.
DEFAULT_MAX_CONDITION = 1e4


class SecretKeyError(ValueError):
    """Base class for key problems."""


class KeyMismatchError(SecretKeyError):
    """A key does not fit the images or the model it is used with."""


class IllConditionedKeyError(SecretKeyError):
    """A drawn (or given) E_a is singular or too ill-conditioned to invert accurately."""


class KeyFileError(SecretKeyError):
    """A key file is missing, truncated, tampered with, or of the wrong shape."""


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


class SecretKey:
    """One client's secret: block permutation l_e (Eq. 4) and block transform E_a (Eq. 2).

    Read-only, not picklable, and without ``__dict__`` (``vars(key)`` fails): nothing prints, copies
    or serialises the secret by accident. Tensors derived from it (E_a^-1 on a device, gather
    indices) are cached on the key itself, so they are freed with it.
    """

    __slots__ = ("_kind", "_image_size", "_patch_size", "_channels", "_block_permutation", "_matrix",
                 "_pixel_permutation", "_inverse", "_derived", "__weakref__")

    def __init__(self, kind: str, image_size: tuple[int, int], patch_size: int, channels: int,
                 block_permutation: np.ndarray, matrix: np.ndarray, pixel_permutation: np.ndarray | None = None):
        h, w = _pair(image_size)
        p = int(patch_size)
        if p <= 0 or h % p or w % p:
            raise KeyMismatchError(
                f"image size {h}x{w} is not divisible by the block size {p}: "
                f"choose a block size that divides both sides (the ViT's patch size)."
            )
        if kind not in KEY_KIND_REGISTRY:
            raise KeyFileError(f"unknown key kind {kind!r}; expected one of {KEY_KINDS}.")
        sets = object.__setattr__
        sets(self, "_kind", kind)
        sets(self, "_image_size", (h, w))
        sets(self, "_patch_size", p)
        sets(self, "_channels", int(channels))
        n, length = self.num_blocks, self.block_length
        block_permutation = np.array(block_permutation, dtype=np.int64)
        if block_permutation.shape != (n,) or not np.array_equal(np.sort(block_permutation), np.arange(n)):
            raise KeyFileError(f"block permutation is not a permutation of {n} blocks.")
        matrix = np.array(matrix, dtype=np.float64)
        if matrix.shape != (length, length):
            raise KeyFileError(f"E_a has shape {matrix.shape}, expected ({length}, {length}).")
        perm, inverse = KEY_KIND_REGISTRY[kind].parts(matrix, pixel_permutation)
        for array in (block_permutation, matrix, inverse, perm):
            if array is not None:
                array.setflags(write=False)
        sets(self, "_block_permutation", block_permutation)
        sets(self, "_matrix", matrix)
        sets(self, "_pixel_permutation", perm)
        sets(self, "_inverse", inverse)
        sets(self, "_derived", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SecretKey is read-only; draw a new key with generate_key(...).")

    @property
    def kind(self) -> str:
        """The name of the key's kind ('permutation', 'orthogonal', 'gaussian', ...): how E_a was drawn."""
        return self._kind

    @property
    def key_kind(self) -> KeyKind:
        """The registered `KeyKind` of this key: what follows from how E_a was drawn."""
        return KEY_KIND_REGISTRY[self._kind]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the key encrypts."""
        return self._image_size

    @property
    def patch_size(self) -> int:
        """p, the side of a square block (the ViT's patch size)."""
        return self._patch_size

    @property
    def channels(self) -> int:
        """c, colour channels per pixel."""
        return self._channels

    @property
    def block_permutation(self) -> np.ndarray:
        """l_e of Eq. (4), 0-based: encrypted block i is plain block l_e(i) (read-only)."""
        return self._block_permutation

    @property
    def matrix(self) -> np.ndarray:
        """E_a of Eq. (2), (L, L) float64 (read-only)."""
        return self._matrix

    @property
    def pixel_permutation(self) -> np.ndarray | None:
        """For kinds that move pixels only, E_a[j, pixel_permutation[j]] = 1; else None."""
        return self._pixel_permutation

    def derived(self, tag: tuple, make: Callable[[], object]) -> object:
        """A value derived from the key (e.g. E_a^-1 on a device), made once by `make` and kept on the key."""
        if tag not in self._derived:
            self._derived[tag] = make()
        return self._derived[tag]

    # -- shape -------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> tuple[int, int]:
        """Blocks per column and per row."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def num_blocks(self) -> int:
        """N = hw / p^2, the number of blocks (patches)."""
        gh, gw = self.grid_size
        return gh * gw

    @property
    def block_length(self) -> int:
        """L = p^2 c, the length of a flattened block."""
        return self.patch_size * self.patch_size * self.channels

    @property
    def inverse_matrix(self) -> np.ndarray:
        """E_a^-1 (float64), applied to image blocks in Eq. (12)."""
        return self._inverse

    def condition_number(self) -> float:
        """2-norm condition number of E_a."""
        return float(np.linalg.cond(self.matrix))

    # -- identity without disclosure ---------------------------------------------------------------
    def _payload(self) -> dict[str, np.ndarray]:
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "image_size": list(self.image_size),
            "patch_size": self.patch_size,
            "channels": self.channels,
        }
        arrays = {
            "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
            "block_permutation": np.ascontiguousarray(self.block_permutation, dtype=np.int64),
            "matrix": np.ascontiguousarray(self.matrix, dtype=np.float64),
        }
        if self.pixel_permutation is not None:
            arrays["pixel_permutation"] = np.ascontiguousarray(self.pixel_permutation, dtype=np.int64)
        return arrays

    def _digest(self) -> str:
        return self.derived(("digest",), self._compute_digest)

    def _compute_digest(self) -> str:
        h = hashlib.sha256()
        for name, arr in sorted(self._payload().items()):
            h.update(name.encode())
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    @property
    def fingerprint(self) -> str:
        """Short public identifier of the key (8 hex digits of a SHA-256; reveals nothing usable)."""
        return hashlib.sha256(("fedvit-key-fingerprint:" + self._digest()).encode()).hexdigest()[:8]

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"SecretKey(kind={self.kind!r}, image_size={h}x{w}, patch_size={self.patch_size}, "
            f"channels={self.channels}, fingerprint={self.fingerprint!r})"
        )

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and self._digest() == other._digest()

    def __hash__(self) -> int:
        return hash(self._digest())

    def __getstate__(self) -> None:
        # Pickling would copy the secret into checkpoints, caches or worker processes unnoticed.
        raise TypeError("SecretKey is not picklable; use key.save(path) to store it deliberately.")

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the key to one owner-only (0600) file with a SHA-256 checksum; returns the path."""
        arrays = self._payload()
        arrays["checksum"] = np.frombuffer(self._digest().encode(), dtype=np.uint8)
        return atomic_write(path, lambda fh: np.savez(fh, **arrays), mode=SECRET_MODE)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SecretKey:
        """Read a key written by `save`: owner-only file, checksum, strict metadata and shapes."""
        path = Path(path)
        if not path.is_file():
            raise KeyFileError(f"no key file at {path}; generate one with generate_key(...).save(path).")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            # As ssh does with private keys: a secret others can read is no longer a secret.
            raise KeyFileError(f"key file {path} is readable by others (mode {mode:04o}): run `chmod 600 {path}` "
                               f"if nobody else could have read it, otherwise treat the key as leaked.")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise KeyFileError(f"key file {path} is truncated or not a key file ({exc}).") from exc
        missing = {"meta", "block_permutation", "matrix", "checksum"} - set(arrays)
        if missing:
            raise KeyFileError(f"key file {path} lacks {sorted(missing)}; it was not written by SecretKey.save.")
        try:
            meta = _parse_meta(arrays["meta"])
            key = cls(
                kind=meta["kind"],
                image_size=tuple(meta["image_size"]),
                patch_size=meta["patch_size"],
                channels=meta["channels"],
                block_permutation=arrays["block_permutation"],
                matrix=arrays["matrix"],
                pixel_permutation=arrays.get("pixel_permutation"),
            )
        except KeyFileError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as exc:
            raise KeyFileError(f"key file {path} is malformed ({type(exc).__name__}: {exc}).") from exc
        if arrays["checksum"].tobytes().decode(errors="replace") != key._digest():
            raise KeyFileError(f"key file {path} fails its checksum: it was modified or corrupted.")
        return key


def _parse_meta(raw: np.ndarray) -> dict:
    """The metadata of a key file, every field checked for its exact type."""
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"metadata is not JSON text ({type(exc).__name__}).") from exc
    if not isinstance(meta, dict):
        raise KeyFileError(f"metadata is a {type(meta).__name__}, not a JSON object.")
    if meta.get("format") != FORMAT_VERSION:
        raise KeyFileError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}.")

    def positive_int(value: object) -> bool:
        return type(value) is int and value > 0

    size = meta.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(positive_int(v) for v in size)):
        raise KeyFileError(f"image_size must be [height, width] as two positive integers, not {size!r}.")
    for name in ("patch_size", "channels"):
        if not positive_int(meta.get(name)):
            raise KeyFileError(f"{name} must be a positive integer, not {meta.get(name)!r}.")
    if meta.get("kind") not in KEY_KIND_REGISTRY:
        raise KeyFileError(f"unknown key kind {meta.get('kind')!r}; expected one of {KEY_KINDS}.")
    return meta


# -- key kinds -------------------------------------------------------------------------------------
class KeyKind:
    """How one kind of key draws E_a (Eq. 2) and what follows from it; a new kind subclasses this.

    The defaults describe a dense invertible E_a (GL(L)); a subclass sets `name`, overrides `draw`,
    and changes the flags and methods that differ, then `register_key_kind(TheKind())`.
    """

    name: str = ""
    moves_pixels_only = False  # E_a is a permutation: encryption is a gather, uint8 images stay exact
    orthogonal = False  # E_a^T E_a = I: inner products of blocks survive encryption (known-plaintext matching)
    draws_can_be_refused = False  # `draw` may raise IllConditionedKeyError, so every client's draw must be tried

    def draw(self, rng: np.random.Generator, length: int, max_condition: float
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """E_a (L x L, float64) drawn from `rng`, and the pixel permutation a key of this kind stores (or None)."""
        raise NotImplementedError(f"key kind {self.name!r} does not say how E_a is drawn.")

    def parts(self, matrix: np.ndarray, pixel_permutation: np.ndarray | None
              ) -> tuple[np.ndarray | None, np.ndarray]:
        """(the pixel permutation to keep, E_a^-1) for a stored E_a; KeyFileError if the parts do not fit."""
        return None, np.linalg.inv(matrix)

    def space(self, length: int) -> tuple[float, int, str]:
        """E_a's key space for blocks of length L: (log10 of the number of keys, real parameters, description)."""
        # A continuum: counting float64 matrices would give a meaningless huge number.
        return math.inf, length * length, "continuous: GL(L)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class PermutationKind(KeyKind):
    """E_a a permutation matrix: pixel (and channel) shuffling inside each block (the paper's Fig. 2)."""

    name = "permutation"
    moves_pixels_only = True
    orthogonal = True

    def draw(self, rng: np.random.Generator, length: int, max_condition: float
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """E_a[j, pixel_permutation[j]] = 1 for a uniformly drawn pixel permutation."""
        pixel_perm = rng.permutation(length).astype(np.int64)
        matrix = np.zeros((length, length))
        matrix[np.arange(length), pixel_perm] = 1.0
        return matrix, pixel_perm

    def parts(self, matrix: np.ndarray, pixel_permutation: np.ndarray | None
              ) -> tuple[np.ndarray | None, np.ndarray]:
        """The stored pixel permutation (checked), and E_a^-1 = E_a^T (exact for a permutation)."""
        length = len(matrix)
        perm = None if pixel_permutation is None else np.array(pixel_permutation, dtype=np.int64)
        if perm is None or perm.shape != (length,) or not np.array_equal(np.sort(perm), np.arange(length)):
            raise KeyFileError("a permutation key needs a pixel permutation of length L.")
        return perm, matrix.T.copy()

    def space(self, length: int) -> tuple[float, int, str]:
        """L! pixel permutations, no real parameters."""
        return math.lgamma(length + 1) / math.log(10), 0, "L! pixel permutations"


class OrthogonalKind(KeyKind):
    """E_a Haar-random orthogonal: dense and perfectly conditioned (cond = 1)."""

    name = "orthogonal"
    orthogonal = True

    def draw(self, rng: np.random.Generator, length: int, max_condition: float
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """QR of a Gaussian matrix, R's diagonal signs folded in: Haar-distributed (Mezzadri 2007)."""
        q, r = np.linalg.qr(rng.standard_normal((length, length)))
        return q * np.sign(np.diag(r)), None

    def space(self, length: int) -> tuple[float, int, str]:
        """The orthogonal group O(L): L(L-1)/2 real parameters."""
        return math.inf, length * (length - 1) // 2, "continuous: orthogonal group O(L)"


class GaussianKind(KeyKind):
    """E_a with i.i.d. normal entries, the literal reading of Eq. (2); ill-conditioned draws are refused."""

    name = "gaussian"
    draws_can_be_refused = True

    def draw(self, rng: np.random.Generator, length: int, max_condition: float
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Entries N(0, 1/L), so E_a keeps pixel magnitudes on average; refused above `max_condition`."""
        matrix = rng.standard_normal((length, length)) / np.sqrt(length)
        check_condition(matrix, max_condition)
        return matrix, None


KEY_KIND_REGISTRY: dict[str, KeyKind] = {}


def register_key_kind(kind: KeyKind) -> KeyKind:
    """Make `kind` available by its name to generate_key, key files, profiles and the study; returns it."""
    if not isinstance(kind, KeyKind) or not kind.name:
        raise TypeError(f"{kind!r} is not a named KeyKind: subclass keys.KeyKind and set `name`.")
    if kind.name in KEY_KIND_REGISTRY:
        raise ValueError(f"key kind {kind.name!r} is already registered; choose another name.")
    KEY_KIND_REGISTRY[kind.name] = kind
    return kind


def key_kind(name: str) -> KeyKind:
    """The registered kind called `name`; ValueError names the registered ones."""
    if name not in KEY_KIND_REGISTRY:
        raise ValueError(f"unknown key kind {name!r}; choose one of {KEY_KINDS} (or register it: keys.KeyKind).")
    return KEY_KIND_REGISTRY[name]


class _KindNames(Sequence[str]):
    """The registered kinds' names, in registration order (read from the registry at each use)."""

    def __getitem__(self, index: int) -> str:
        return tuple(KEY_KIND_REGISTRY)[index]

    def __len__(self) -> int:
        return len(KEY_KIND_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(KEY_KIND_REGISTRY))

    def __repr__(self) -> str:
        return repr(tuple(KEY_KIND_REGISTRY))


KEY_KINDS: Sequence[str] = _KindNames()
for _kind in (PermutationKind(), OrthogonalKind(), GaussianKind()):
    register_key_kind(_kind)


def generate_key(
    image_size: int | tuple[int, int],
    patch_size: int,
    channels: int = 3,
    kind: str = "orthogonal",
    seed: int | np.random.SeedSequence | None = None,
    max_condition: float = DEFAULT_MAX_CONDITION,
) -> SecretKey:
    """Draw a secret key; the same seed gives a byte-identical key, seed=None uses OS entropy."""
    how = key_kind(kind)
    size = _pair(image_size)
    if patch_size <= 0 or size[0] % patch_size or size[1] % patch_size:
        raise KeyMismatchError(
            f"image size {size[0]}x{size[1]} is not divisible by the block size {patch_size}: "
            f"choose a block size that divides both sides (the ViT's patch size)."
        )
    rng = np.random.default_rng(seed)
    n = (size[0] // patch_size) * (size[1] // patch_size)
    length = patch_size * patch_size * channels
    block_perm = rng.permutation(n).astype(np.int64)  # drawn first: a key's bytes depend on this order
    matrix, pixel_perm = how.draw(rng, length, max_condition)
    return SecretKey(kind, size, patch_size, channels, block_perm, matrix, pixel_perm)


def check_condition(matrix: np.ndarray, max_condition: float = DEFAULT_MAX_CONDITION) -> float:
    """Raise IllConditionedKeyError if `matrix` is singular or cond > max_condition; return cond."""
    cond = float(np.linalg.cond(matrix))
    if not np.isfinite(cond) or cond > 1e15:
        raise IllConditionedKeyError("E_a is singular (det E_a = 0, Eq. 2 requires an inverse).")
    if cond > max_condition:
        raise IllConditionedKeyError(
            f"E_a has condition number {cond:.3g} > max_condition={max_condition:.3g}: its inverse would "
            f"amplify float32 rounding by that factor and break the equivalence of Eq. (14). Draw again "
            f"with another seed, use kind='orthogonal' (cond = 1), or raise max_condition knowingly."
        )
    return cond


def client_keys(
    num_clients: int,
    image_size: int | tuple[int, int],
    patch_size: int,
    channels: int = 3,
    kind: str = "orthogonal",
    seed: int | None = None,
) -> list[SecretKey]:
    """One independent key per client, from child seeds of one key seed (or OS entropy)."""
    children = np.random.SeedSequence(seed).spawn(num_clients)
    return [generate_key(image_size, patch_size, channels, kind, child) for child in children]


def key_of_client(
    client: int,
    num_clients: int,
    image_size: int | tuple[int, int],
    patch_size: int,
    channels: int = 3,
    kind: str = "orthogonal",
    *,
    seed: int,
) -> SecretKey:
    """`client_keys(num_clients, ..., seed)[client]`, drawn alone: a client's node needs only its own key."""
    if not 0 <= client < num_clients:
        raise ValueError(f"client {client} is outside 0..{num_clients - 1}.")
    child = np.random.SeedSequence(seed).spawn(num_clients)[client]  # spawning is cheap; drawing a key is not
    return generate_key(image_size, patch_size, channels, kind, child)
