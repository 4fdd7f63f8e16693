"""A dispatch mode that records which kernels ran, so that tests check the path taken instead of assuming it."""

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode


class KernelCounter(TorchDispatchMode):
    """Counts the ATen / extension ops (by overload packet name, e.g. ``aten.bmm``) run inside the ``with``
    block."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def named(self, *names: str) -> int:
        """Calls of ops with exactly one of these names."""
        return sum(self.calls[name] for name in names)

    def containing(self, text: str) -> int:
        """Calls of ops whose name contains ``text``."""
        return sum(count for name, count in self.calls.items() if text in name)
