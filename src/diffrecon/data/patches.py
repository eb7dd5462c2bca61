"""What every training-patch source shares: augmentation, batching, resumable RNG state."""

from __future__ import annotations

import numpy as np
import torch


class PatchSource:
    """Subclasses implement ``patch() -> (2, size, size)``; the RNG is ``self.rng``."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def patch(self) -> np.ndarray:
        raise NotImplementedError

    def flip_rotate(self, z: np.ndarray) -> np.ndarray:
        """Random left-right flip, then a random 90-degree rotation (two RNG draws)."""
        if self.rng.random() < 0.5:
            z = z[:, ::-1]
        return np.rot90(z, k=int(self.rng.integers(4)))

    @staticmethod
    def channels(z: np.ndarray) -> np.ndarray:
        """Complex ``(H, W)`` -> float32 ``(2, H, W)`` (real, imaginary)."""
        return np.stack([z.real, z.imag]).astype(np.float32)

    def batch(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.patch() for _ in range(n)]))

    def get_state(self) -> dict:
        """The RNG state (saved in training checkpoints for exact resumption)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
